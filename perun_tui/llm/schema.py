"""The analyst's reply schema: sent to Ollama as ``format`` and validated on return.

The same pydantic model does both jobs, so what the model is constrained to produce and
what Perun accepts cannot drift apart. ``AnalystReply.model_json_schema()`` is the
``format``; :func:`parse_reply` validates a reply against it and then against the
universe and the pre-computed limits.

Leniency is limited to replies whose meaning is unambiguous:

* symbol case and surrounding whitespace (``" nvda "`` → ``NVDA``);
* action case and whitespace (``"BUY"`` → ``buy``);
* numbers sent as strings (``"0.8"``, ``"231.5"``).

Everything else is strict: a confidence of ``1.7`` or ``80`` is rejected rather than
guessed to mean 80 %, an unknown action (``"long"``) is rejected, a non-positive price
is rejected, and so is a symbol named twice (two opinions on one symbol). Keys the schema
does not name are ignored: they carry no meaning Perun could act on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from perun_tui.llm.base import ProposedSignal, SymbolLimits
from perun_tui.models import Action

ACTIONS: tuple[str, ...] = ("buy", "sell", "hold")


def _clean_symbol(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _clean_action(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _clean_number(value: Any) -> Any:
    # "0.8" is accepted by pydantic's lax mode once stray whitespace is gone; true/false is
    # not a number here (lax mode would read true as 1.0: full confidence from a typo).
    if isinstance(value, bool):
        raise ValueError("a number is required, not true/false")
    return value.strip() if isinstance(value, str) else value


# Constraints go before the validators: placed after a BeforeValidator, pydantic leaks them
# into the JSON schema as non-standard "ge"/"le" keys instead of "minimum"/"maximum".
SymbolField = Annotated[str, Field(min_length=1), BeforeValidator(_clean_symbol)]
ActionField = Annotated[Literal["buy", "sell", "hold"], BeforeValidator(_clean_action)]
Confidence = Annotated[float, Field(ge=0, le=1), BeforeValidator(_clean_number)]
Price = Annotated[float, Field(gt=0), BeforeValidator(_clean_number)]


class SignalReply(BaseModel):
    """One idea from the model. ``confidence`` is a probability, not a percentage."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    symbol: SymbolField
    action: ActionField
    confidence: Confidence
    rationale: str = Field(description="one short sentence: why")
    target_price: Price | None = None
    stop_loss: Price | None = None


class AnalystReply(BaseModel):
    """The whole reply: one market view and at most one signal per symbol."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    market_view: str
    signals: list[SignalReply]


def reply_schema() -> dict[str, Any]:
    """The JSON schema sent as Ollama's ``format`` (the same model validates replies)."""
    return AnalystReply.model_json_schema()


# --------------------------------------------------------------------------- validation


@dataclass
class ParsedReply:
    """The outcome of checking one reply.

    ``problems`` make the reply invalid as a whole (a repair re-ask, then an error);
    ``unknown`` lists signals naming symbols outside the universe, which are re-asked once
    and after that dropped with a reason while the rest is kept.
    """

    reply: AnalystReply | None = None
    signals: list[ProposedSignal] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # each "SYM: why it was dropped"

    @property
    def ok(self) -> bool:
        return self.reply is not None and not self.problems and not self.unknown


def parse_reply(
    content: str,
    *,
    universe: Sequence[str],
    limits: Mapping[str, SymbolLimits],
    done_reason: str | None = None,
    num_predict: int | None = None,
) -> ParsedReply:
    """Validate ``content`` as JSON, against the schema, then against universe and limits.

    A symbol without limits counts as neither buyable nor sellable (nothing to check it
    against, so nothing is allowed but hold).
    """
    out = ParsedReply()
    if done_reason == "length":
        budget = f" (num_predict={num_predict} tokens)" if num_predict else ""
        out.problems.append(
            f"the reply was cut off before it was complete{budget}, done_reason=length"
        )
        return out
    text = content.strip()
    if not text:
        out.problems.append("the reply was empty (no JSON object)")
        return out
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        out.problems.append(
            f"the reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
        return out
    try:
        reply = AnalystReply.model_validate(document)
    except ValidationError as exc:
        out.problems.extend(describe_errors(exc, document))
        return out
    out.reply = reply
    known = set(universe)
    seen: set[str] = set()
    for sig in reply.signals:
        if sig.symbol not in known:
            out.unknown.append(f"{sig.symbol}: not in the universe")
            continue
        if sig.symbol in seen:
            out.problems.append(f"{sig.symbol} appears more than once; give one signal per symbol")
            continue
        seen.add(sig.symbol)
        lim = limits.get(sig.symbol)
        if sig.action == "buy" and not (lim is not None and lim.can_buy):
            why = f" ({lim.note})" if lim is not None and lim.note else ""
            out.problems.append(f"buy {sig.symbol} is not allowed{why}: can_buy is false")
            continue
        if sig.action == "sell" and not (lim is not None and lim.can_sell):
            why = f" ({lim.note})" if lim is not None and lim.note else ""
            out.problems.append(
                f"sell {sig.symbol} is not allowed{why}: nothing held to sell (can_sell is false)"
            )
            continue
        out.signals.append(
            ProposedSignal(
                symbol=sig.symbol,
                action=Action(sig.action),
                confidence=sig.confidence,
                rationale=sig.rationale.strip(),
                target_price=sig.target_price,
                stop_loss=sig.stop_loss,
            )
        )
    return out


def _signal_symbol(document: Any, index: int) -> str | None:
    try:
        raw = document["signals"][index]["symbol"]
    except (KeyError, IndexError, TypeError):
        return None
    return raw.strip().upper() if isinstance(raw, str) and raw.strip() else None


def _shown(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value)
    return type(value).__name__


def describe_errors(exc: ValidationError, document: Any) -> list[str]:
    """Pydantic errors as sentences a model (and a person) can act on.

    E.g. ``confidence 1.7 for NVDA is outside 0..1``.
    """
    out: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        value = err.get("input")
        kind = err["type"]
        if len(loc) >= 2 and loc[0] == "signals" and isinstance(loc[1], int):
            index = loc[1]
            sym = _signal_symbol(document, index)
            who = f"for {sym}" if sym else f"in signal {index + 1}"
            name = str(loc[2]) if len(loc) > 2 else "signal"
        else:
            who = "at the top level"
            name = ".".join(str(p) for p in loc) or "reply"
        if kind == "missing":
            out.append(f"{name} is missing {who}")
        elif name == "confidence" and kind in ("less_than_equal", "greater_than_equal"):
            out.append(f"confidence {_shown(value)} {who} is outside 0..1")
        elif name == "action" and kind == "literal_error":
            out.append(f"action {_shown(value)} {who} is not one of buy, sell, hold")
        elif kind in ("greater_than", "finite_number") and name in ("target_price", "stop_loss"):
            out.append(f"{name} {_shown(value)} {who} must be a positive price or null")
        elif kind in ("float_parsing", "float_type", "finite_number", "value_error"):
            out.append(f"{name} {_shown(value)} {who} is not a number")
        elif name == "signal" and kind in ("model_type", "dict_type"):
            out.append(f"signal {index + 1} is not an object")
        elif kind in ("model_type", "dict_type") and not loc:
            out.append("the reply is not a JSON object with market_view and signals")
        else:
            out.append(f"{name} {who}: {err['msg']} (got {_shown(value)})")
    return out
