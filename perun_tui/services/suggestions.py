"""Suggestions: concrete parameter changes with the evidence behind them.

Each suggestion names a settings key, its current and proposed value, and a sentence of
evidence from the scored history ("signals with confidence < 0.65 lost in 14 of 20
cases ..."), with the p-value that says how well chance alone could explain it: an exact
sign test for one group, Fisher's exact test when two groups are compared, both on the
independent signals only (see ``scoring``). The strength shown follows from the p-value.

A change is applied only on confirmation (``apply_suggestion``), or automatically when
``optimization.auto_apply`` is on and the change stays within the configured bounds (an
allowed key, a small step, strong enough evidence, never one a person reverted). Every
change is recorded — old, new, why, when, by whom — in the state table and can be undone
with ``revert_change``. The running settings object is updated in place (pydantic
validates the value), and the config file in use is edited with tomlkit so its comments
and layout survive; with no file in use, the user config file is created (and the change
says so). A change is only ever recorded once it is on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions
from pydantic import Field, TypeAdapter, ValidationError

from perun_tui.config import LEGACY_ENV, OptimizationSettings, Settings, user_config_file
from perun_tui.services.memory import Memory
from perun_tui.services.report_model import ReportModel
from perun_tui.services.scoring import (
    HorizonStats,
    SignalScoring,
    band_stats,
    binomial_p_value,
    fisher_exact_p,
)

CHANGES_KEY = "optimization.changes"
DISMISSED_KEY = "optimization.dismissed"
RESTART_KEYS = frozenset({"trading.symbols"})  # copied at start-up by the daemon

Strength = Literal["strong", "moderate", "weak"]


class Suggestion(ReportModel):
    id: str
    kind: str
    key: str | None = None  # None: advice without a single setting to change
    old: Any = None
    new: Any = None
    why: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    p_value: float | None = None
    strength: Strength = "weak"
    auto_ok: bool = False  # may be applied automatically under the current settings
    auto_note: str = ""  # why it may not be
    restart: bool = False  # takes effect after a restart

    def describe(self) -> str:
        if self.key is None:
            return self.why
        return f"{self.key}: {show_value(self.old)} → {show_value(self.new)} — {self.why}"


class ParameterChange(ReportModel):
    id: str
    suggestion_id: str | None = None
    key: str
    old: Any
    new: Any
    why: str
    at: datetime
    by: str  # "user" or "auto"
    persisted_to: str | None = None  # the config file edited (None: older records, one run)
    note: str = ""
    reverted_at: datetime | None = None
    reverted_by: str | None = None

    @property
    def in_force(self) -> bool:
        """Written to a config file and not reverted. A change recorded without a file
        (before changes were always written) lived for one run only."""
        return self.reverted_at is None and self.persisted_to is not None

    @property
    def state(self) -> str:
        if self.reverted_at is not None:
            return "reverted"
        return "in force" if self.persisted_to is not None else "ended with its run"


_CHANGES = TypeAdapter(list[ParameterChange])


class SuggestionError(ValueError):
    """The suggestion cannot be applied (stale, invalid value, ...); the message says why."""


def show_value(value: Any) -> str:
    """A setting's value as the report, the screen and the messages show it."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def strength_of(p: float | None) -> Strength:
    if p is None:
        return "weak"
    if p <= 0.05:
        return "strong"
    if p <= 0.2:
        return "moderate"
    return "weak"


def _sid(kind: str, key: str | None, new: Any) -> str:
    text = f"{kind}|{key}|{json.dumps(new, sort_keys=True, default=str)}"
    return "g" + hashlib.sha1(text.encode()).hexdigest()[:8]


def get_value(settings: Settings, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(settings, section), name)


# --------------------------------------------------------------------------- rules


def _losses_sentence(label: str, st: HorizonStats, horizon: str) -> str:
    losses = st.n - st.hits
    mean = st.mean_return_pct or 0.0
    return (
        f"{label} lost in {losses} of {st.n} cases at {horizon} cycles "
        f"(mean {mean:+.2f}%; {_independent(st, 'lost')})"
    )


def _independent(st: HorizonStats, verb: str) -> str:
    """The counts the p-value is computed on, in words."""
    if st.independent == st.n:
        return "no overlapping windows"
    n = st.independent
    k = n - st.independent_hits if verb == "lost" else st.independent_hits
    return f"counting overlapping windows once: {verb} {k} of {n}"


def _threshold_suggestion(
    key: str, current: float, scoring: SignalScoring, opt: OptimizationSettings
) -> Suggestion | None:
    """Raise a confidence threshold past a band of losing signals — only when the signals
    above it made money, and the band did worse than them by Fisher's exact test."""
    lo_bound, hi_bound = opt.confidence_bounds
    prim = scoring.primary
    best: tuple[float, HorizonStats, HorizonStats, float, float] | None = None
    for row in scoring.thresholds:
        t = row.threshold
        if t <= current + 1e-9 or t > hi_bound + 1e-9 or t < lo_bound - 1e-9:
            continue
        # the signals the change would cut: current ≤ confidence < t
        cut = band_stats(scoring.bands, current, t)
        kept = row.above
        if cut.independent < opt.min_samples or kept.independent < max(3, opt.min_samples // 2):
            continue
        cut_mean = cut.mean_return_pct or 0.0
        if cut_mean >= 0 or (cut.hit_rate or 0) >= 0.5:
            continue  # the band did not lose
        if (kept.mean_return_pct or 0.0) <= 0:
            continue  # what is left would not make money either: no case for the threshold
        p = fisher_exact_p(
            cut.independent_hits, cut.independent, kept.independent_hits, kept.independent,
            "less",
        )
        if p is None or p > opt.max_p_value:
            continue
        avoided = -cut_mean * cut.n
        if best is None or avoided > best[3]:
            best = (t, cut, kept, avoided, p)
    if best is None:
        return None
    t, cut, kept, _, p = best
    why = (
        _losses_sentence(f"signals with confidence {current:g}–{t:g}", cut, prim)
        + f"; those at ≥ {t:g} won {kept.hits} of {kept.n} (mean "
        f"{kept.mean_return_pct or 0:+.2f}%; {_independent(kept, 'won')}). Fisher's exact "
        f"test: p = {p:.3f} that the lower band does no worse. Raise {key} to {t:g}"
    )
    return Suggestion(
        id=_sid("confidence_threshold", key, t),
        kind="confidence_threshold",
        key=key,
        old=current,
        new=t,
        why=why,
        evidence={"cut": cut.model_dump(), "kept": kept.model_dump(), "horizon": prim,
                  "test": "Fisher's exact, one-sided, independent signals"},
        p_value=p,
        strength=strength_of(p),
    )


def _symbol_suggestions(
    scoring: SignalScoring,
    realized: Mapping[str, float],
    symbols: Sequence[str],
    opt: OptimizationSettings,
) -> list[Suggestion]:
    out: list[Suggestion] = []
    prim = scoring.primary
    for group in scoring.by_symbol:
        st = group.horizons.get(prim, HorizonStats())
        sym = group.group
        if sym not in symbols or len(symbols) <= 1 or st.independent < opt.min_samples:
            continue
        p = st.p_value  # sign test on the independent signals
        losing = (
            (st.hit_rate or 0) < 0.4
            and (st.mean_return_pct or 0) < 0
            and st.independent_hits * 2 < st.independent
        )
        if not losing or (p or 1) > opt.max_p_value:
            continue
        pl = realized.get(sym, 0.0)
        if pl > 0:
            continue
        new = [s for s in symbols if s != sym]
        out.append(
            Suggestion(
                id=_sid("drop_symbol", "trading.symbols", new),
                kind="drop_symbol",
                key="trading.symbols",
                old=list(symbols),
                new=new,
                why=_losses_sentence(f"{sym} signals", st, prim)
                + f", realized P&L {pl:+,.2f}: drop {sym} from trading.symbols",
                evidence={"symbol": sym, "stats": st.model_dump(), "realized_pl": pl},
                p_value=p,
                strength=strength_of(p),
                restart=True,
            )
        )
    return out


def _override_suggestion(
    scoring: SignalScoring, settings: Settings, opt: OptimizationSettings
) -> Suggestion | None:
    o = scoring.overrides
    if settings.approval.mode != "manual" or o.rejected_scored < opt.min_samples:
        return None
    p = binomial_p_value(o.person_right, o.rejected_scored)
    if o.person_right / o.rejected_scored > 0.35 or (p or 1) > opt.max_p_value:
        return None
    return Suggestion(
        id=_sid("approval_mode", "approval.mode", "threshold"),
        kind="approval_mode",
        key="approval.mode",
        old=settings.approval.mode,
        new="threshold",
        why=(
            f"of {o.rejected_scored} signals rejected by hand, {o.model_right} would have made "
            f"money and only {o.person_right} would have lost (at {o.horizon} cycles): let "
            f"signals at ≥ {settings.approval.auto_min_confidence:g} confidence through "
            "automatically (approval.mode = threshold)"
        ),
        evidence=o.model_dump(),
        p_value=p,
        strength=strength_of(p),
    )


def _ttl_suggestion(scoring: SignalScoring, settings: Settings, opt: OptimizationSettings) -> (
    Suggestion | None
):
    o = scoring.overrides
    if o.expired < opt.min_samples:
        return None
    share = o.expired_would_have_won / o.expired
    if share < 0.6:
        return None
    current = settings.approval.ttl_minutes
    new = float(min(1440, current * 2))
    if new <= current:
        return None
    p = binomial_p_value(o.expired_would_have_won, o.expired)
    return Suggestion(
        id=_sid("ttl", "approval.ttl_minutes", new),
        kind="ttl",
        key="approval.ttl_minutes",
        old=current,
        new=new,
        why=(
            f"{o.expired} signals expired waiting for approval and {o.expired_would_have_won} "
            f"of them would have made money: give approvals more time "
            f"(approval.ttl_minutes {current:g} → {new:g})"
        ),
        evidence={"expired": o.expired, "would_have_won": o.expired_would_have_won},
        p_value=p,
        strength=strength_of(p),
    )


def _action_advice(scoring: SignalScoring, opt: OptimizationSettings) -> list[Suggestion]:
    out: list[Suggestion] = []
    prim = scoring.primary
    for group in scoring.by_action:
        st = group.horizons.get(prim, HorizonStats())
        if (
            st.independent < opt.min_samples
            or (st.hit_rate or 0) >= 0.4
            or (st.mean_return_pct or 0) >= 0
            or st.independent_hits * 2 >= st.independent
        ):
            continue
        p = st.p_value  # sign test on the independent signals
        if (p or 1) > opt.max_p_value:
            continue
        wrong = st.n - st.hits
        if group.group == "sell":
            why = (
                f"sell signals were followed by a rise in {wrong} of {st.n} cases at {prim} "
                f"cycles (mean {st.mean_return_pct or 0:+.2f}% for the call; "
                f"{_independent(st, 'lost')}): its bearish calls were wrong more often than "
                "right — review the analyst's sell rules before trusting its exits"
            )
        else:
            why = (
                f"buy signals lost in {wrong} of {st.n} cases at {prim} cycles (mean "
                f"{st.mean_return_pct or 0:+.2f}%; {_independent(st, 'lost')}): review the "
                "analyst's buy rules"
            )
        out.append(
            Suggestion(
                id=_sid("action", None, group.group),
                kind="advice",
                why=why,
                evidence={"action": group.group, "stats": st.model_dump()},
                p_value=p,
                strength=strength_of(p),
            )
        )
    return out


def _calibration_advice(scoring: SignalScoring, opt: OptimizationSettings) -> Suggestion | None:
    """Advice when the most confident signals did worse than the least confident ones by
    Fisher's exact test (two-sided) on independent signals."""
    test = scoring.calibration_test
    if test is None or test.p_value is None or test.p_value > opt.max_p_value:
        return None
    lo, hi = test.low_stats, test.high_stats
    if hi.independent_hits * lo.independent >= lo.independent_hits * hi.independent:
        return None  # higher confidence did at least as well
    prim = scoring.primary
    return Suggestion(
        id=_sid("calibration", None, [test.low, test.high]),
        kind="advice",
        why=(
            f"confidence does not rank outcomes: {test.high} signals were right "
            f"{hi.independent_hits} of {hi.independent} times, {test.low} ones "
            f"{lo.independent_hits} of {lo.independent} (independent signals at {prim} "
            f"cycles; Fisher's exact p = {test.p_value:.3f}) — do not rely on confidence "
            "thresholds; review the analyst's prompt or model"
        ),
        evidence=test.model_dump(),
        p_value=test.p_value,
        strength=strength_of(test.p_value),
    )


def _frequency_suggestion(frequency: Any, settings: Settings) -> Suggestion | None:
    """From a ``FrequencyAnalysis``: only when a coarser frequency beat the noise. The
    p-value is a normal approximation: the difference in replayed return over the base
    replay's standard error (an estimate; see the frequency caveats)."""
    best = frequency.best_step
    noise = frequency.noise_pct
    if best is None or best == 1 or noise is None or noise <= 0:
        return None
    runs = {r.step: r for r in frequency.replays}
    base, alt = runs.get(1), runs.get(best)
    if base is None or alt is None:
        return None
    diff = alt.total_return_pct - base.total_return_pct
    if diff < noise or alt.trades < 3:
        return None
    p = math.erfc(diff / noise / math.sqrt(2))  # two-sided, z = diff / noise
    current = settings.trading.frequency_minutes
    new = min(390, current * best)
    return Suggestion(
        id=_sid("frequency", "trading.frequency_minutes", new),
        kind="frequency",
        key="trading.frequency_minutes",
        old=current,
        new=new,
        why=(
            f"replaying the stored prices every {new} min returned "
            f"{alt.total_return_pct:+.2f}% vs {base.total_return_pct:+.2f}% every {current} "
            f"min (noise ≈ ±{noise:.2f} points, so z ≈ {diff / noise:.1f}, p ≈ {p:.2f}; "
            "see the frequency caveats)"
        ),
        evidence={"base": base.model_dump(), "alternative": alt.model_dump()},
        p_value=p,
        strength=strength_of(p),
    )


def make_suggestions(
    scoring: SignalScoring,
    settings: Settings,
    *,
    realized_by_symbol: Mapping[str, float] | None = None,
    frequency: Any = None,
    changes: Sequence[ParameterChange] = (),
    dismissed: Sequence[str] = (),
) -> list[Suggestion]:
    """Every suggestion the evidence supports, strongest first, with ``auto_ok`` set."""
    opt = settings.optimization
    found: list[Suggestion | None] = [
        _threshold_suggestion(
            "risk.min_confidence", settings.risk.min_confidence, scoring, opt
        ),
    ]
    if settings.approval.mode == "threshold":
        found.append(
            _threshold_suggestion(
                "approval.auto_min_confidence",
                settings.approval.auto_min_confidence,
                scoring,
                opt,
            )
        )
    found.extend(
        _symbol_suggestions(
            scoring, realized_by_symbol or {}, settings.trading.symbols, opt
        )
    )
    found.append(_override_suggestion(scoring, settings, opt))
    found.append(_ttl_suggestion(scoring, settings, opt))
    found.append(_calibration_advice(scoring, opt))
    found.extend(_action_advice(scoring, opt))
    if frequency is not None:
        found.append(_frequency_suggestion(frequency, settings))
    out = [s for s in found if s is not None and s.id not in dismissed]
    for s in out:
        s.auto_ok, s.auto_note = auto_allowed(s, settings, changes)
    rank = {"strong": 0, "moderate": 1, "weak": 2}
    out.sort(key=lambda s: (rank[s.strength], s.key is None, s.p_value or 1.0))
    return out


def auto_allowed(
    suggestion: Suggestion, settings: Settings, changes: Sequence[ParameterChange] = ()
) -> tuple[bool, str]:
    """Whether ``optimization.auto_apply`` may apply it, and if not, why not."""
    opt = settings.optimization
    key = suggestion.key
    if key is None:
        return False, "advice only"
    if key not in opt.auto_apply_keys:
        return False, f"{key} is not in optimization.auto_apply_keys"
    if suggestion.p_value is None or suggestion.p_value > opt.auto_max_p_value:
        return False, (
            f"evidence weaker than optimization.auto_max_p_value ({opt.auto_max_p_value:g})"
        )
    old, new = suggestion.old, suggestion.new
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return False, "only numeric values are changed automatically"
    if old != 0 and abs(new - old) / abs(old) * 100 > opt.max_step_pct + 1e-9:
        return False, f"step larger than optimization.max_step_pct ({opt.max_step_pct:g}%)"
    if "confidence" in key:
        lo, hi = opt.confidence_bounds
        if not lo - 1e-9 <= new <= hi + 1e-9:
            return False, f"outside optimization.confidence_bounds [{lo:g}, {hi:g}]"
    for c in changes:
        if c.key == key and c.new == new and c.reverted_at is not None:
            return False, "a person reverted this change before"
    return True, "within the auto-apply bounds"


# --------------------------------------------------------------------------- the record


async def load_changes(memory: Memory) -> list[ParameterChange]:
    text = await memory.get_state(CHANGES_KEY)
    return _CHANGES.validate_json(text) if text else []


async def _save_changes(memory: Memory, changes: Sequence[ParameterChange]) -> None:
    await memory.set_state(CHANGES_KEY, _CHANGES.dump_json(list(changes)).decode())


async def load_dismissed(memory: Memory) -> list[str]:
    text = await memory.get_state(DISMISSED_KEY)
    data = json.loads(text) if text else []
    return [str(x) for x in data] if isinstance(data, list) else []


async def dismiss_suggestion(memory: Memory, suggestion_id: str) -> None:
    ids = await load_dismissed(memory)
    if suggestion_id not in ids:
        ids.append(suggestion_id)
        await memory.set_state(DISMISSED_KEY, json.dumps(ids[-500:]))


def _env_override(key: str, environ: Mapping[str, str]) -> str | None:
    section, _, name = key.partition(".")
    env = f"PERUN_{section.upper()}__{name.upper()}"
    if env in environ:
        return env
    for legacy, target in LEGACY_ENV.items():
        if target == (section, name) and environ.get(legacy):
            return legacy
    return None


def _set_live(settings: Settings, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    part = getattr(settings, section, None)
    if part is None or name not in type(part).model_fields:
        raise SuggestionError(f"unknown setting {key}")
    try:
        setattr(part, name, value)  # validate_assignment: bounds are checked here
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        raise SuggestionError(f"{key} = {show_value(value)} is not allowed: {msg}") from None


async def _change(
    settings: Settings,
    settings_path: Path | str | None,
    *,
    key: str,
    expect: Any,
    value: Any,
    environ: Mapping[str, str] | None,
) -> tuple[str, str]:
    """Set ``key`` live and in the config file (``settings_path``, or ``settings_file``
    when None). Returns (the file written, notes). The file is written in a worker
    thread, so this is safe to await from the UI loop."""
    current = get_value(settings, key)
    if current != expect:
        raise SuggestionError(
            f"{key} is now {show_value(current)}, not {show_value(expect)}: the suggestion is "
            "out of date (run the analysis again)"
        )
    path = Path(settings_path) if settings_path is not None else settings_file(settings)
    created = not path.exists()
    _set_live(settings, key, value)
    try:
        await asyncio.to_thread(write_setting, path, key, value)
    except (OSError, ValueError) as exc:
        _set_live(settings, key, current)
        raise SuggestionError(f"cannot write {key} to {path}: {exc}; nothing changed") from exc
    notes: list[str] = []
    if created:
        notes.append(f"created {path}: no config file was in use")
    env = _env_override(key, os.environ if environ is None else environ)
    if env:
        notes.append(f"{env} in the environment overrides the file on the next start")
    if key in RESTART_KEYS:
        notes.append("takes effect after a restart")
    return str(path), "; ".join(notes)


async def apply_suggestion(
    memory: Memory,
    settings: Settings,
    settings_path: Path | str | None,
    suggestion: Suggestion,
    *,
    by: str = "user",
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> ParameterChange:
    """Apply one suggestion to the running settings and the config file, and record it."""
    if suggestion.key is None:
        raise SuggestionError("this suggestion is advice; there is no setting to change")
    persisted, note = await _change(
        settings, settings_path,
        key=suggestion.key, expect=suggestion.old, value=suggestion.new, environ=environ,
    )
    at = now or datetime.now(UTC)
    changes = await load_changes(memory)
    change = ParameterChange(
        id=f"c{len(changes) + 1}-{suggestion.id}",
        suggestion_id=suggestion.id,
        key=suggestion.key,
        old=suggestion.old,
        new=suggestion.new,
        why=suggestion.why,
        at=at,
        by=by,
        persisted_to=persisted,
        note=note,
    )
    changes.append(change)
    await _save_changes(memory, changes)
    return change


async def revert_change(
    memory: Memory,
    settings: Settings,
    settings_path: Path | str | None,
    change_id: str,
    *,
    by: str = "user",
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> ParameterChange:
    """Put a recorded change's old value back (if nothing changed the key since)."""
    changes = await load_changes(memory)
    found = next((c for c in changes if c.id == change_id), None)
    if found is None:
        raise SuggestionError(f"no recorded change {change_id}")
    if found.reverted_at is not None:
        raise SuggestionError(f"change {change_id} was already reverted")
    if found.persisted_to is None:
        raise SuggestionError(
            f"change {change_id} was never written to a config file: it ended with the run "
            "it was made in, so there is nothing to undo"
        )
    _, note = await _change(
        settings, settings_path if settings_path is not None else found.persisted_to,
        key=found.key, expect=found.new, value=found.old, environ=environ,
    )
    found.reverted_at = now or datetime.now(UTC)
    found.reverted_by = by
    if note:
        found.note = (found.note + "; " if found.note else "") + f"revert: {note}"
    await _save_changes(memory, changes)
    return found


# --------------------------------------------------------------------------- config file


NEW_FILE_HEADER = (
    "# Perun settings. Created by Perun to record a parameter change (perun apply / the\n"
    "# performance screen); every key and its default is listed in the README.\n"
)


def settings_file(settings: Settings) -> Path:
    """Where changes are written: the config file the settings came from, or — when none
    was in use — the user config file that config loading looks for last."""
    return user_config_file() if settings.source == "defaults" else Path(settings.source)


def set_toml_value(text: str, section: str, key: str, value: Any) -> str:
    """``text`` with ``[section] key`` set to ``value``; comments and layout kept."""
    doc = tomlkit.parse(text)
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc[section] = table
    elif not isinstance(table, MutableMapping):
        raise ValueError(f"{section} in the file is not a table")
    table[key] = value
    return tomlkit.dumps(doc)


def write_setting(path: Path, key: str, value: Any) -> None:
    """Set ``key`` (``section.name``) in the TOML file at ``path`` (created with its
    directory when missing), atomically. Blocking: run it in a thread."""
    section, _, name = key.partition(".")
    text = path.read_text(encoding="utf-8") if path.exists() else NEW_FILE_HEADER
    try:
        updated = set_toml_value(text, section, name, value)
        parsed = tomllib.loads(updated)
    except (tomlkit.exceptions.TOMLKitError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    if parsed.get(section, {}).get(name) != value:
        raise ValueError(f"editing {path} did not set {key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".perun-tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, path)
