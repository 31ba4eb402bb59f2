"""The reply schema: lenient where unambiguous, strict otherwise, never raising."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perun_tui.llm.base import SymbolLimits
from perun_tui.llm.schema import AnalystReply, parse_reply, reply_schema
from perun_tui.models import Action

UNIVERSE = ["AAPL", "MSFT", "NVDA", "BRK.B"]
LIMITS = {
    s: SymbolLimits(symbol=s, max_buy_qty=10, held_qty=5 if s == "AAPL" else 0,
                    can_buy=s != "MSFT", can_sell=s == "AAPL",
                    note="max open positions reached" if s == "MSFT" else "")
    for s in UNIVERSE
}  # fmt: skip


def parse(document: Any, **kw: Any) -> Any:
    text = document if isinstance(document, str) else json.dumps(document)
    return parse_reply(text, universe=UNIVERSE, limits=LIMITS, **kw)


def one(**fields: Any) -> dict[str, Any]:
    signal = {"symbol": "NVDA", "action": "buy", "confidence": 0.7, "rationale": "r"}
    signal.update(fields)
    return {"market_view": "calm", "signals": [signal]}


def test_schema_is_standard_json_schema() -> None:
    schema = reply_schema()
    assert schema["required"] == ["market_view", "signals"]
    props = schema["$defs"]["SignalReply"]["properties"]
    assert props["action"]["enum"] == ["buy", "sell", "hold"]
    assert props["confidence"]["minimum"] == 0 and props["confidence"]["maximum"] == 1
    # pydantic-only constraint keys would be ignored by Ollama's grammar: none may leak
    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    assert not keys(schema) & {"ge", "le", "gt", "lt"}
    assert set(schema["$defs"]["SignalReply"]["required"]) == {
        "symbol", "action", "confidence", "rationale"
    }


@pytest.mark.parametrize(
    ("fields", "expect"),
    [
        ({"symbol": " nvda "}, ("NVDA", Action.BUY, 0.7)),
        ({"action": "BUY"}, ("NVDA", Action.BUY, 0.7)),
        ({"action": " Hold "}, ("NVDA", Action.HOLD, 0.7)),
        ({"confidence": "0.8"}, ("NVDA", Action.BUY, 0.8)),
        ({"confidence": " 1 "}, ("NVDA", Action.BUY, 1.0)),
        ({"confidence": 0}, ("NVDA", Action.BUY, 0.0)),
        ({"symbol": "brk.b"}, ("BRK.B", Action.BUY, 0.7)),
    ],
)
def test_lenient_where_unambiguous(fields: dict[str, Any], expect: tuple[Any, ...]) -> None:
    parsed = parse(one(**fields))
    assert parsed.ok, parsed.problems
    (s,) = parsed.signals
    assert (s.symbol, s.action, s.confidence) == expect


def test_prices_as_strings_and_extra_keys() -> None:
    parsed = parse(one(target_price="950.5", stop_loss=" 880 ", horizon="1d"))
    assert parsed.ok
    assert parsed.signals[0].target_price == 950.5 and parsed.signals[0].stop_loss == 880


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"confidence": 1.7}, "confidence 1.7 for NVDA is outside 0..1"),
        ({"confidence": 80}, "confidence 80 for NVDA is outside 0..1"),
        ({"confidence": "80%"}, 'confidence "80%" for NVDA is not a number'),
        ({"confidence": True}, "confidence true for NVDA is not a number"),
        ({"confidence": "high"}, 'confidence "high" for NVDA is not a number'),
        ({"confidence": "NaN"}, 'confidence "NaN" for NVDA is not a number'),
        ({"action": "long"}, 'action "long" for NVDA is not one of buy, sell, hold'),
        ({"action": "strong buy"}, 'action "strong buy" for NVDA is not one of buy, sell, hold'),
        ({"stop_loss": -5}, "stop_loss -5 for NVDA must be a positive price or null"),
        ({"target_price": 0}, "target_price 0 for NVDA must be a positive price or null"),
        ({"rationale": None}, "rationale for NVDA: Input should be a valid string (got null)"),
    ],
)
def test_strict_otherwise(fields: dict[str, Any], problem: str) -> None:
    parsed = parse(one(**fields))
    assert not parsed.ok and parsed.reply is None
    assert parsed.problems == [problem]


def test_missing_fields_and_wrong_shapes() -> None:
    assert parse({"signals": []}).problems == ["market_view is missing at the top level"]
    assert parse([]).problems == ["the reply is not a JSON object with market_view and signals"]
    bad = {"market_view": "x", "signals": [5, {"symbol": "AAPL", "action": "buy"}]}
    assert parse(bad).problems == [
        "signal 1 is not an object",
        "confidence is missing for AAPL",
        "rationale is missing for AAPL",
    ]


def test_text_level_problems() -> None:
    assert parse("").problems == ["the reply was empty (no JSON object)"]
    assert parse("Sure! Here is my analysis").problems[0].startswith(
        "the reply is not valid JSON: Expecting value at line 1 column 1"
    )
    cut = parse(json.dumps(one()), done_reason="length", num_predict=256)
    assert cut.problems == [
        "the reply was cut off before it was complete (num_predict=256 tokens), "
        "done_reason=length"
    ]


def test_universe_and_limits() -> None:
    reply = {
        "market_view": "x",
        "signals": [
            {"symbol": "TSLA", "action": "buy", "confidence": 0.9, "rationale": "r"},
            {"symbol": "MSFT", "action": "buy", "confidence": 0.9, "rationale": "r"},
            {"symbol": "NVDA", "action": "sell", "confidence": 0.9, "rationale": "r"},
            {"symbol": "AAPL", "action": "sell", "confidence": 0.9, "rationale": "r"},
            {"symbol": "AAPL", "action": "buy", "confidence": 0.9, "rationale": "r"},
            {"symbol": "BRK.B", "action": "hold", "confidence": 0.2, "rationale": "r"},
        ],
    }
    parsed = parse(reply)
    assert parsed.unknown == ["TSLA: not in the universe"]
    assert parsed.problems == [
        "buy MSFT is not allowed (max open positions reached): can_buy is false",
        "sell NVDA is not allowed: nothing held to sell (can_sell is false)",
        "AAPL appears more than once; give one signal per symbol",
    ]
    assert [(s.symbol, s.action) for s in parsed.signals] == [
        ("AAPL", Action.SELL),
        ("BRK.B", Action.HOLD),
    ]


def test_symbol_without_limits_may_only_hold() -> None:
    parsed = parse_reply(json.dumps(one()), universe=["NVDA"], limits={})
    assert parsed.problems == ["buy NVDA is not allowed: can_buy is false"]
    hold = parse_reply(json.dumps(one(action="hold")), universe=["NVDA"], limits={})
    assert hold.ok


# --------------------------------------------------------------------------- properties

symbols = st.sampled_from(UNIVERSE)
case = st.sampled_from([str.lower, str.upper, str.title])
pad = st.sampled_from(["", " ", "  ", "\t"])


@given(
    sym=symbols,
    action=st.sampled_from(["buy", "hold"]),
    conf=st.floats(0, 1, allow_nan=False),
    as_string=st.booleans(),
    f_sym=case,
    f_act=case,
    p=pad,
)
def test_valid_ideas_always_parse_to_the_same_meaning(
    sym: str, action: str, conf: float, as_string: bool, f_sym: Any, f_act: Any, p: str
) -> None:
    if sym == "MSFT" and action == "buy":
        action = "hold"
    raw_conf: Any = repr(conf) if as_string else conf
    parsed = parse(one(symbol=p + f_sym(sym) + p, action=f_act(action) + p, confidence=raw_conf))
    assert parsed.ok, parsed.problems
    (s,) = parsed.signals
    assert (s.symbol, s.action.value, s.confidence) == (sym, action, conf)


@given(conf=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9)).filter(
    lambda x: x == x and abs(x) != float("inf")
))
def test_confidence_outside_0_1_is_always_refused(conf: float) -> None:
    parsed = parse(one(confidence=conf))
    assert parsed.signals == [] and not parsed.ok
    assert parsed.problems and "outside 0..1" in parsed.problems[0]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(document=json_values)
def test_any_json_is_a_result_never_an_exception(document: Any) -> None:
    parsed = parse(document)
    assert parsed.ok or parsed.problems or parsed.unknown


@given(
    document=st.fixed_dictionaries(
        {"market_view": st.text(), "signals": st.lists(
            st.fixed_dictionaries({
                "symbol": st.text(max_size=6) | symbols,
                "action": st.text(max_size=6) | st.sampled_from(["buy", "sell", "hold"]),
                "confidence": st.floats() | st.text(max_size=4) | st.integers(),
                "rationale": st.text(max_size=10),
            }), max_size=5)}
    )
)
def test_accepted_signals_are_always_within_the_rules(document: dict[str, Any]) -> None:
    parsed = parse(document)
    for s in parsed.signals:
        assert s.symbol in UNIVERSE
        assert 0 <= s.confidence <= 1
        lim = LIMITS[s.symbol]
        assert s.action is not Action.BUY or lim.can_buy
        assert s.action is not Action.SELL or lim.can_sell


def test_reply_model_round_trip() -> None:
    reply = AnalystReply.model_validate_json(json.dumps(one()))
    assert AnalystReply.model_validate_json(reply.model_dump_json()) == reply
