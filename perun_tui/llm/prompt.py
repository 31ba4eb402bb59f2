"""Build the compact prompt: one table row per symbol, limits pre-computed, terse memory.

One call per cycle covers the whole universe, so the prompt has to stay small as the
universe grows: a fixed part (rules, account, legend) plus one table row and at most three
memory entries per symbol. The target is ≤ 120 prompt tokens per symbol; ``bench/llm.py``
measures it.

Tokens are *estimated* (:func:`estimate_tokens`) the way Qwen's and Llama's tokenizers
treat this text, erring high: every digit is a token of its own (Qwen splits numbers
digit by digit, which makes the table cost far more than characters / 4 suggests), a run
of letters costs one token per four letters, and every other symbol one token. The exact
count comes back from Ollama as ``Usage.prompt_tokens``.

Templates live in ``perun_tui/llm/prompts/`` (``system.md``, ``context.md``,
``repair.md``) and are loaded with ``importlib.resources``. A directory named by
``llm.prompt_path`` overrides them file by file: a ``system.md`` there replaces the
built-in one, a missing file falls back to the built-in. Placeholders are written
``{{name}}``; an unknown name is an error at load time (:class:`PromptError`), so a typo
in a custom prompt cannot silently reach the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from perun_tui.llm.base import AnalysisContext, RecalledSignal, SymbolFeatures, SymbolLimits
from perun_tui.market_hours import EXCHANGE_TZ

CHARS_PER_TOKEN = 4
MEMORY_PER_SYMBOL = 3
TEMPLATE_NAMES = ("system.md", "context.md", "repair.md")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

CONTEXT_PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "cycle",
        "now",
        "mode",
        "cash",
        "equity",
        "buying_power",
        "max_position_pct",
        "min_confidence",
        "market_note",
        "symbol_count",
        "symbols",
        "table",
        "memory",
    }
)
REPAIR_PLACEHOLDERS: frozenset[str] = CONTEXT_PLACEHOLDERS | {
    "problems",
    "can_buy",
    "can_sell",
    "hint",
}
TABLE_COLUMNS = (
    "sym", "price", "r1", "r5", "r20", "trend", "z", "rsi", "vol", "volx", "spr",
    "held", "pl", "maxbuy", "sell", "note",
)  # fmt: skip


class PromptError(ValueError):
    """A prompt template cannot be used; the message names the file and what to fix."""


_LETTERS = re.compile(r"[^\W\d_]+")
_OTHER = re.compile(r"[^\w\s]|_")


def estimate_tokens(text: str) -> int:
    """A pessimistic token count for Qwen/Llama tokenizers (see the module docstring):
    digits one each, letters one per four, any other non-space character one each."""
    digits = sum(ch.isdigit() for ch in text)
    words = sum(math.ceil(len(m) / CHARS_PER_TOKEN) for m in _LETTERS.findall(text))
    return digits + words + len(_OTHER.findall(text))


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class PromptTemplates:
    system: str
    context: str
    repair: str
    sources: tuple[str, ...]  # where each came from, for `perun doctor` and the log

    @property
    def source(self) -> str:
        return ", ".join(self.sources)


def _builtin(name: str) -> str:
    return resources.files("perun_tui.llm").joinpath("prompts", name).read_text("utf-8")


# Without these the model would answer blind: no symbol table, or no list of what to fix.
REQUIRED_PLACEHOLDERS = {"context.md": ("table",), "repair.md": ("problems",)}


def _check_placeholders(name: str, text: str, origin: str, allowed: Iterable[str]) -> None:
    allowed_set = set(allowed)
    used = set(_PLACEHOLDER.findall(text))
    unknown = sorted(used - allowed_set)
    if unknown:
        shown = ", ".join("{{" + u + "}}" for u in unknown)
        raise PromptError(
            f"prompt template {origin} uses unknown placeholder(s) {shown}; "
            f"known in {name}: " + ", ".join(sorted(allowed_set))
        )
    missing = [p for p in REQUIRED_PLACEHOLDERS.get(name, ()) if p not in used]
    if missing:
        shown = ", ".join("{{" + m + "}}" for m in missing)
        raise PromptError(
            f"prompt template {origin} lacks {shown}, without which the model cannot see "
            f"what it is asked about; add it to your {name}"
        )


def load_templates(prompt_path: str = "") -> PromptTemplates:
    """The built-in templates, each overridden by a same-named file in ``prompt_path``."""
    override: Path | None = None
    if prompt_path.strip():
        override = Path(prompt_path).expanduser()
        if not override.is_dir():
            raise PromptError(
                f"llm.prompt_path = {prompt_path!r} is not a directory; point it at a "
                f"directory holding any of {', '.join(TEMPLATE_NAMES)}, or set it to \"\""
            )
    texts: dict[str, str] = {}
    sources: list[str] = []
    for name in TEMPLATE_NAMES:
        candidate = override / name if override is not None else None
        if candidate is not None and candidate.is_file():
            try:
                text = candidate.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise PromptError(f"prompt template {candidate}: cannot read it: {exc}") from exc
            origin = str(candidate)
        else:
            text = _builtin(name)
            origin = f"built-in {name}"
        if not text.strip():
            raise PromptError(f"prompt template {origin} is empty")
        allowed = REPAIR_PLACEHOLDERS if name == "repair.md" else CONTEXT_PLACEHOLDERS
        _check_placeholders(name, text, origin, allowed)
        texts[name] = text
        sources.append(origin)
    return PromptTemplates(
        system=texts["system.md"],
        context=texts["context.md"],
        repair=texts["repair.md"],
        sources=tuple(sources),
    )


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; blank lines left by empty values are collapsed."""
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


# --------------------------------------------------------------------------- numbers


def num(value: float, decimals: int = 2) -> str:
    """Compact: rounded, trailing zeros dropped, no "-0"."""
    if not math.isfinite(value):
        return "-"
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def money(value: float) -> str:
    return num(value, 0) if abs(value) >= 1000 else num(value, 2)


def _when(now: datetime) -> str:
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return aware.astimezone(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M ET")


def universe(context: AnalysisContext) -> list[str]:
    """The symbols of the cycle, each once, in the given order."""
    return list(dict.fromkeys(context.symbols))


# --------------------------------------------------------------------------- the table


def table_row(symbol: str, f: SymbolFeatures | None, lim: SymbolLimits | None) -> str:
    held = num(lim.held_qty, 4) if lim is not None else "0"
    pl = num(lim.position_pl_pct, 1) if lim is not None and lim.held_qty else "-"
    max_buy = num(lim.max_buy_qty, 4) if lim is not None and lim.can_buy else "0"
    sell = "y" if lim is not None and lim.can_sell else "n"
    notes = [lim.note] if lim is not None and lim.note else []
    if lim is None:
        notes.append("no limits: hold only")
    if f is None:
        notes.append("no market data")
        cells = ["-"] * 10
    else:
        cells = [
            num(f.price, 2),
            # one decimal is all a decision needs, and every digit is a token
            num(f.ret_1, 1),
            num(f.ret_5, 1),
            num(f.ret_20, 1),
            num(f.trend_pct, 1),
            num(f.zscore, 1),
            num(f.rsi, 0),
            num(f.volatility_pct, 1),
            num(f.volume_ratio, 1),
            num(f.spread_pct * 100, 0),  # basis points
        ]
    note = "; ".join(n.replace("|", "/").replace("\n", " ") for n in notes)
    return "|".join([symbol, *cells, held, pl, max_buy, sell, note])


def market_table(context: AnalysisContext) -> str:
    rows = ["|".join(TABLE_COLUMNS)]
    for sym in universe(context):
        rows.append(table_row(sym, context.features.get(sym), context.limits.get(sym)))
    return "\n".join(rows)


def memory_entry(sig: RecalledSignal) -> str:
    parts = [f"c{sig.cycle}", sig.action.value, num(sig.confidence, 2), sig.status]
    if sig.outcome_pct is not None:
        outcome = num(sig.outcome_pct, 1)
        parts.append(("" if outcome.startswith("-") or outcome == "0" else "+") + outcome + "%")
    return " ".join(parts)


def memory_lines(context: AnalysisContext) -> str:
    lines = []
    for sym in universe(context):
        recalled = sorted(
            context.memory.get(sym, []), key=lambda s: (s.cycle, s.at), reverse=True
        )[:MEMORY_PER_SYMBOL]
        if recalled:
            lines.append(f"{sym}: " + "; ".join(memory_entry(s) for s in recalled))
    return "\n".join(lines) if lines else "none yet"


def context_values(context: AnalysisContext) -> dict[str, str]:
    syms = universe(context)
    note = context.market_note.strip()
    return {
        "cycle": str(context.cycle),
        "now": _when(context.now),
        "mode": context.mode,
        "cash": money(context.cash),
        "equity": money(context.equity),
        "buying_power": money(context.buying_power),
        "max_position_pct": num(context.max_position_pct, 1),
        "min_confidence": num(context.min_confidence, 2),
        "market_note": f"Note: {note}" if note else "",
        "symbol_count": str(len(syms)),
        "symbols": ", ".join(syms),
        "table": market_table(context),
        "memory": memory_lines(context),
    }


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]

    @property
    def text(self) -> str:
        """The prompt as stored with the analysis: a readable transcript."""
        return f"[system]\n{self.system}\n[user]\n{self.user}"

    @property
    def chars(self) -> int:
        return len(self.system) + len(self.user)

    @property
    def tokens_est(self) -> int:
        return estimate_tokens(self.system) + estimate_tokens(self.user)


def build_prompt(context: AnalysisContext, templates: PromptTemplates) -> Prompt:
    values = context_values(context)
    return Prompt(system=render(templates.system, values), user=render(templates.context, values))


def _listing(symbols: Sequence[str], total: int) -> str:
    if not symbols:
        return "no symbol"
    if len(symbols) == total and total > 1:
        return "every symbol"
    return ", ".join(symbols)


def build_repair(
    context: AnalysisContext,
    templates: PromptTemplates,
    problems: Sequence[str],
    *,
    truncated: bool = False,
) -> str:
    """The user message of the one repair re-ask: what was wrong and the allowed values."""
    syms = universe(context)
    can_buy = [s for s in syms if (lim := context.limits.get(s)) is not None and lim.can_buy]
    can_sell = [s for s in syms if (lim := context.limits.get(s)) is not None and lim.can_sell]
    hint = (
        "Keep it short: market_view in one sentence, signals only for buy or sell, "
        "each rationale under 20 words."
        if truncated
        else ""
    )
    values = {
        **context_values(context),
        "problems": "\n".join(f"- {p}" for p in problems),
        "can_buy": _listing(can_buy, len(syms)),
        "can_sell": _listing(can_sell, len(syms)),
        "hint": hint,
    }
    return render(templates.repair, values)
