"""Signal scoring, calibration, overrides and suggestions, checked against hand-made cases."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from perun_tui.config import load_settings, user_config_file
from perun_tui.llm.base import AnalysisResult, DroppedIdea
from perun_tui.models import Action, Quote, Signal, SignalStatus, SignalTransition
from perun_tui.services.history import Point
from perun_tui.services.memory import Memory
from perun_tui.services.scoring import (
    ANALYST_LIMITS,
    CLOSE,
    NOT_PROPOSED,
    REFUSED,
    REJECTED,
    TAKEN,
    SignalScore,
    band_stats,
    binomial_p_value,
    confidence_bucket,
    dropped_signals,
    fisher_exact_p,
    independent_ids,
    score_signals,
    summarize_scores,
    track_records,
)
from perun_tui.services.suggestions import (
    Suggestion,
    SuggestionError,
    apply_suggestion,
    auto_allowed,
    load_changes,
    make_suggestions,
    revert_change,
    set_toml_value,
    settings_file,
)
from tests.sim import SIM_START

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # Monday 09:30 New York
NEXT_DAY = T0 + timedelta(days=1)


def pt(cycle: int, at: datetime, prices: dict[str, float]) -> Point:
    return Point(cycle=cycle, at=at, equity=1.0, cash=0.0, prices=prices)


def sig(
    n: int,
    cycle: int,
    action: Action,
    price: float,
    conf: float = 0.7,
    symbol: str = "A",
    status: SignalStatus = SignalStatus.FILLED,
) -> Signal:
    return Signal(
        id=f"s{n}", cycle=cycle, symbol=symbol, action=action, confidence=conf,
        rationale="", analyst="rules", created_at=T0 + timedelta(minutes=15 * (cycle - 1)),
        price=price, status=status,
    )


# --------------------------------------------------------------------------- scoring


def test_signals_scored_at_horizons_and_close() -> None:
    prices = [100, 101, 99, 102, 104, 103]  # cycles 1..6, one session
    points = [pt(i + 1, T0 + timedelta(minutes=15 * i), {"A": p}) for i, p in enumerate(prices)]
    points.append(pt(7, NEXT_DAY, {"A": 110}))  # the next session starts: day 1 is closed
    buy = sig(1, 1, Action.BUY, 100)
    sell = sig(2, 2, Action.SELL, 101)
    scores = score_signals([buy, sell], points, horizons=(1, 5))
    b, s = scores
    assert b.returns["+1"] == pytest.approx(1.0)  # 100 → 101
    assert b.returns["+5"] == pytest.approx(3.0)  # 100 → 103
    assert b.returns[CLOSE] == pytest.approx(3.0)  # last price of the session: 103
    assert s.returns["+1"] == pytest.approx((1 - 99 / 101) * 100)  # fell: a right sell
    assert s.returns["+5"] == pytest.approx(-(110 / 101 - 1) * 100)  # cycle 7
    hold = sig(3, 1, Action.HOLD, 100)
    assert score_signals([hold], points) == []  # holds are not ideas


def test_unreached_horizons_and_open_sessions_are_unscored() -> None:
    points = [pt(i + 1, T0 + timedelta(minutes=15 * i), {"A": 100 + i}) for i in range(3)]
    (score,) = score_signals([sig(1, 2, Action.BUY, 101)], points, horizons=(1, 5))
    assert score.returns["+1"] == pytest.approx(100 * (102 / 101 - 1))
    assert score.returns["+5"] is None
    assert score.returns[CLOSE] is None  # the session is not over yet


def test_binomial_p_value_by_hand() -> None:
    # 2 of 10: P(X ≤ 2) = (1 + 10 + 45) / 1024; two-sided doubles it
    assert binomial_p_value(2, 10) == pytest.approx(2 * 56 / 1024)
    assert binomial_p_value(5, 10) == 1.0
    assert binomial_p_value(0, 0) is None


def test_binomial_p_value_matches_exact_integers() -> None:
    for n in (1, 2, 7, 30, 101, 500):
        for hits in range(n + 1):
            k = min(hits, n - hits)
            exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
            assert binomial_p_value(hits, n) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_binomial_p_value_of_a_long_history() -> None:
    # 2.0**n overflows from n = 1024: long runs failed with OverflowError (errno 34)
    assert binomial_p_value(2000, 4000) == 1.0
    assert 0.0 < (binomial_p_value(1000, 4000) or 1.0) < 1e-200
    # against the normal approximation with continuity correction, close at this n
    z = (2000 - 1980 - 0.5) / math.sqrt(4000 / 4)
    assert binomial_p_value(1980, 4000) == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1e-4)


def test_confidence_buckets() -> None:
    assert confidence_bucket(0.45) == "< 0.50"
    assert confidence_bucket(0.6) == "0.60–0.70"
    assert confidence_bucket(0.95) == "≥ 0.90"


def _scores(rows: Sequence[tuple[float, float | None, str, str]]) -> list[SignalScore]:
    """(confidence, return at +5, disposition, decided_by) → scores, 30 cycles apart (a day
    apart at 26 cycles a session): no two outcome windows overlap, each is independent."""
    out = []
    for i, (conf, ret, disp, by) in enumerate(rows):
        s = sig(i, 1 + 30 * i, Action.BUY, 100, conf=conf)
        out.append(SignalScore(s, disp, by, {"+1": ret, "+5": ret, CLOSE: ret}))
    return out


def test_summary_groups_thresholds_and_overrides() -> None:
    rows = [
        (0.60, -1.0, TAKEN, "auto"), (0.60, -2.0, TAKEN, "auto"), (0.62, 1.0, TAKEN, "auto"),
        (0.75, 2.0, TAKEN, "auto"), (0.80, 1.0, TAKEN, "auto"),
        (0.70, -1.0, REJECTED, "user"),  # person right
        (0.70, 3.0, REJECTED, "user"),  # model right
        (0.90, None, REFUSED, "risk"),  # not reached yet
    ]
    sc = summarize_scores(_scores(rows), horizons=(1, 5), primary=5, min_samples=2)
    assert sc.signals == 8 and sc.scored == 7
    overall = sc.overall.horizons["+5"]
    assert (overall.n, overall.hits) == (7, 4)
    assert overall.mean_return_pct == pytest.approx(3.0 / 7)  # (-1-2+1+2+1-1+3) / 7
    conf = {g.group: g.horizons["+5"] for g in sc.by_confidence}
    assert (conf["0.60–0.70"].n, conf["0.60–0.70"].hits) == (3, 1)
    assert conf["0.60–0.70"].mean_return_pct == pytest.approx(-2 / 3)
    assert (conf["0.70–0.80"].n, conf["0.70–0.80"].hits) == (3, 2)
    row = {r.threshold: r for r in sc.thresholds}[0.7]
    assert (row.below.n, row.below.hits, row.above.n, row.above.hits) == (3, 1, 4, 3)
    o = sc.overrides
    assert (o.rejected, o.rejected_scored, o.person_right, o.model_right) == (2, 2, 1, 1)
    band = band_stats(sc.bands, 0.6, 0.7)
    assert (band.n, band.hits) == (3, 1)
    assert band.mean_return_pct == pytest.approx(-2 / 3)
    # 0.70–0.80: 2 of 3 right, 0.60–0.70: 1 of 3 — Fisher's exact test cannot tell them
    # apart: every split of 3 hits over two groups of 3 is at most as likely as this one
    assert sc.calibration == (
        "no clear difference between confidence levels (could well be chance) — 0.70–0.80: "
        "2 of 3 right (67%) vs 0.60–0.70: 1 of 3 (33%), independent signals at +5; "
        "Fisher's exact p = 1.00"
    )
    disp = {g.group: g.signals for g in sc.by_disposition}
    assert disp == {TAKEN: 5, REFUSED: 1, REJECTED: 2}


def test_decided_by_and_disposition_from_transitions() -> None:
    points = [pt(i + 1, T0 + timedelta(minutes=15 * i), {"A": 100.0}) for i in range(3)]
    s = sig(1, 1, Action.BUY, 100, status=SignalStatus.REJECTED)
    t = [
        SignalTransition(signal_id="s1", old=SignalStatus.PROPOSED, new=SignalStatus.PENDING,
                         by="risk", reason="", at=T0),
        SignalTransition(signal_id="s1", old=SignalStatus.PENDING, new=SignalStatus.REJECTED,
                         by="user", reason="no", at=T0),
    ]
    (score,) = score_signals([s], points, {"s1": t}, horizons=(1,))
    assert (score.disposition, score.decided_by) == (REJECTED, "user")


def test_track_records() -> None:
    rows = [(0.7, 1.0, TAKEN, "auto"), (0.7, -3.0, TAKEN, "auto")]
    rec = track_records(_scores(rows), horizon=5)["A"]
    assert (rec.signals, rec.hit_rate, rec.mean_return_pct) == (2, 0.5, -1.0)
    assert rec.describe() == "A: 2 past signals, 50% right at +5 cycles, mean -1.00%"


# --------------------------------------------------------------------------- suggestions


def settings_for(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    base = {"PERUN_STORAGE__PATH": str(tmp_path / "data"), "PERUN_SIM__START": SIM_START}
    base.update(env)
    return load_settings(env=base, cwd=tmp_path, use_dotenv=False)


def _losing_low_band() -> list[SignalScore]:
    # 0.55–0.65: 2 wins, 10 losses (mean -1%); ≥ 0.65: 8 wins, 2 losses (mean +1%)
    rows = [(0.58, 1.0, TAKEN, "auto")] * 2 + [(0.6, -1.5, TAKEN, "auto")] * 10
    rows += [(0.7, 1.5, TAKEN, "auto")] * 8 + [(0.7, -1.0, TAKEN, "auto")] * 2
    return _scores(rows)


def test_threshold_suggestion_with_evidence(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    sc = summarize_scores(_losing_low_band(), horizons=(1, 5), primary=5, min_samples=8)
    found = make_suggestions(sc, settings)
    thr = next(s for s in found if s.key == "risk.min_confidence")
    assert (thr.old, thr.new) == (0.55, 0.65)
    assert "lost in 10 of 12 cases" in thr.why and "Raise risk.min_confidence to 0.65" in thr.why
    assert "won 8 of 10 (mean +1.00%" in thr.why
    # Fisher, one-sided: 10 hits among 22 signals, at most 2 of them in the band of 12:
    # [C(10,0)·C(12,12) + C(10,1)·C(12,11) + C(10,2)·C(12,10)] / C(22,12) = 3091 / 646646
    assert thr.p_value == pytest.approx(3091 / 646646)
    assert thr.strength == "strong"
    # 0.55 → 0.65 is an 18% step, over the default 15% max_step_pct
    assert thr.auto_ok is False and "max_step_pct" in thr.auto_note
    wider = settings_for(tmp_path, PERUN_OPTIMIZATION__MAX_STEP_PCT="20")
    assert auto_allowed(thr, wider) == (True, "within the auto-apply bounds")


def test_no_higher_threshold_when_the_signals_above_it_lost_too(tmp_path: Path) -> None:
    # the band 0.55–0.65 lost 10 of 12, but ≥ 0.65 averaged -0.20% (8 × +0.5, 2 × -3.0):
    # cutting the band would not leave a strategy that makes money
    rows = [(0.58, 1.0, TAKEN, "auto")] * 2 + [(0.6, -1.5, TAKEN, "auto")] * 10
    rows += [(0.7, 0.5, TAKEN, "auto")] * 8 + [(0.7, -3.0, TAKEN, "auto")] * 2
    sc = summarize_scores(_scores(rows), horizons=(1, 5), primary=5, min_samples=8)
    assert [s for s in make_suggestions(sc, settings_for(tmp_path)) if s.key] == []


def test_overlapping_signals_count_once_in_the_tests(tmp_path: Path) -> None:
    # the same losing idea on A every cycle for 12 cycles: 12 scored, but their +5
    # windows overlap; counted once per 5 cycles (1, 6, 11) that is 3 observations
    prices = [100.0 - i for i in range(20)]
    points = [pt(i + 1, T0 + timedelta(minutes=15 * i), {"A": p, "B": 50.0})
              for i, p in enumerate(prices)]
    signals = [sig(c, c, Action.BUY, prices[c - 1], conf=0.6) for c in range(1, 13)]
    signals.append(sig(99, 2, Action.BUY, 50.0, symbol="B"))
    scores = score_signals(signals, points, horizons=(5,))
    assert independent_ids(scores, "+5") == {"s1", "s6", "s11", "s99"}
    assert independent_ids(scores, CLOSE) == set()  # the session never closed
    sc = summarize_scores(scores, horizons=(5,), primary=5, min_samples=3)
    a = next(g for g in sc.by_symbol if g.group == "A").horizons["+5"]
    assert (a.n, a.hits, a.independent, a.independent_hits) == (12, 0, 3, 0)
    assert a.p_value == pytest.approx(2 / 8)  # sign test of 0 of 3, not of 0 of 12
    assert sc.independent == 4
    # 3 independent losers are below min_samples = 8: no suggestion from 12 repeats
    assert make_suggestions(sc, settings_for(tmp_path)) == []


def test_fisher_exact_by_hand() -> None:
    # [[1, 3], [3, 1]]: 4 hits among 8, 4 in group a. P(k hits in a) ∝ C(4,k)·C(4,4-k):
    # 1, 16, 36, 16, 1 (of 70). Observed k = 1 (16/70).
    assert fisher_exact_p(1, 4, 3, 4) == pytest.approx(34 / 70)  # all but k = 2
    assert fisher_exact_p(1, 4, 3, 4, "less") == pytest.approx(17 / 70)  # k ≤ 1
    assert fisher_exact_p(1, 4, 3, 4, "greater") == pytest.approx(69 / 70)  # k ≥ 1
    # the audit's case: 7 of 16 right vs 6 of 11. Weights C(13,k)·C(14,16-k) for k = 2..13;
    # only k = 8 (3,864,861) is more likely than k = 7 (3,435,432); C(27,16) = 13,037,895
    assert fisher_exact_p(7, 16, 6, 11) == pytest.approx((13_037_895 - 3_864_861) / 13_037_895)
    assert fisher_exact_p(0, 0, 1, 2) is None
    with pytest.raises(ValueError):
        fisher_exact_p(3, 2, 1, 2)


def test_calibration_advice_needs_a_real_difference(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    # 0.80–0.90: 1 of 10 right; 0.50–0.60: 9 of 10. Fisher two-sided:
    # 2 × [C(10,1)·C(10,9) + C(10,0)·C(10,10)] / C(20,10) = 2 × 101 / 184756
    rows = [(0.85, 1.0, TAKEN, "auto")] + [(0.85, -1.0, TAKEN, "auto")] * 9
    rows += [(0.55, 1.0, TAKEN, "auto")] * 9 + [(0.55, -1.0, TAKEN, "auto")]
    sc = summarize_scores(_scores(rows), horizons=(5,), primary=5, min_samples=8)
    assert sc.calibration_test is not None
    assert sc.calibration_test.p_value == pytest.approx(202 / 184756)
    assert sc.calibration.startswith("higher confidence did WORSE")
    (advice,) = [s for s in make_suggestions(sc, settings) if s.kind == "advice"
                 and "rank" in s.why]
    assert advice.p_value == pytest.approx(202 / 184756) and advice.strength == "strong"
    # the audit's case: 7 of 16 vs 6 of 11 (p ≈ 0.70) is no evidence at all
    rows = [(0.65, 1.0, TAKEN, "auto")] * 7 + [(0.65, -1.0, TAKEN, "auto")] * 9
    rows += [(0.55, 1.0, TAKEN, "auto")] * 6 + [(0.55, -1.0, TAKEN, "auto")] * 5
    sc = summarize_scores(_scores(rows), horizons=(5,), primary=5, min_samples=8)
    assert sc.calibration.startswith("no clear difference")
    assert not any("rank" in s.why for s in make_suggestions(sc, settings))


def test_dropped_ideas_become_refused_signals() -> None:
    result = AnalysisResult(
        analyst="rules",
        dropped=["A sell: nothing held to sell", "C buy: cooldown"],
        dropped_ideas=[
            DroppedIdea(symbol="A", action=Action.SELL, confidence=0.62,
                        reason="bearish, but nothing held to sell", rationale="downtrend"),
            DroppedIdea(symbol="C", action=Action.BUY, confidence=0.7, reason="cooldown"),
        ],
    )
    quotes = {"A": Quote(symbol="A", ts=T0, bid=99.9, ask=100.1, last=100.0)}
    ((signal, move),) = dropped_signals(result, 7, quotes, T0, salt="i1")  # C: no quote
    assert (signal.symbol, signal.action, signal.confidence, signal.price, signal.cycle) == (
        "A", Action.SELL, 0.62, 100.0, 7
    )
    assert signal.status is SignalStatus.REFUSED and signal.rationale == "downtrend"
    assert (move.by, move.reason, move.old) == (
        ANALYST_LIMITS, "bearish, but nothing held to sell", SignalStatus.PROPOSED
    )
    points = [pt(7, T0, {"A": 100.0}), pt(8, T0 + timedelta(minutes=15), {"A": 99.0})]
    (score,) = score_signals([signal], points, {signal.id: [move]}, horizons=(1,))
    assert score.disposition == NOT_PROPOSED and score.returns["+1"] == pytest.approx(1.0)


def test_no_suggestion_without_enough_evidence(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rows = [(0.6, -1.0, TAKEN, "auto")] * 3 + [(0.7, 1.0, TAKEN, "auto")] * 3
    sc = summarize_scores(_scores(rows), horizons=(1, 5), primary=5, min_samples=8)
    assert [s for s in make_suggestions(sc, settings) if s.key] == []


def test_symbol_and_override_suggestions(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    losers = []
    for i in range(10):
        s = sig(i, 1 + 5 * i, Action.BUY, 100, symbol="MSFT")  # windows do not overlap
        losers.append(SignalScore(s, TAKEN, "auto", {"+5": -1.0 if i < 9 else 1.0}))
    rejected = []
    for i in range(10):
        s = sig(100 + i, 1, Action.BUY, 100, symbol="AAPL", status=SignalStatus.REJECTED)
        rejected.append(SignalScore(s, REJECTED, "user", {"+5": 1.0 if i < 9 else -1.0}))
    sc = summarize_scores([*losers, *rejected], horizons=(5,), primary=5, min_samples=8)
    found = {s.kind: s for s in make_suggestions(sc, settings, realized_by_symbol={"MSFT": -5})}
    drop = found["drop_symbol"]
    assert drop.new == ["AAPL", "NVDA", "SPY"] and drop.restart
    assert "MSFT signals lost in 9 of 10 cases" in drop.why
    assert drop.p_value == pytest.approx(binomial_p_value(1, 10))  # 2 × 11 / 1024
    assert drop.strength == "strong"
    mode = found["approval_mode"]
    assert (mode.old, mode.new) == ("manual", "threshold")
    assert "9 would have made money and only 1 would have lost" in mode.why


def test_set_toml_value_keeps_comments_and_layout() -> None:
    text = (
        "# top\n[risk]\nmin_confidence = 0.55         # ideas below are refused\n"
        "cooldown_minutes = 60\n\n[approval]\nmode = \"manual\"  # how\n"
    )
    out = set_toml_value(text, "risk", "min_confidence", 0.65)
    assert out == text.replace("0.55", "0.65")  # nothing else moves
    out = set_toml_value(out, "approval", "mode", "threshold")
    assert 'mode = "threshold"  # how\n' in out
    out = set_toml_value(out, "approval", "ttl_minutes", 30.0)  # a key not in the file yet
    out = set_toml_value(out, "trading", "symbols", ["AAPL", "SPY"])  # a missing section
    assert out.startswith("# top\n[risk]\nmin_confidence = 0.65         # ideas below")
    data = tomllib.loads(out)
    assert data["risk"] == {"min_confidence": 0.65, "cooldown_minutes": 60}
    assert data["approval"] == {"mode": "threshold", "ttl_minutes": 30.0}
    assert data["trading"]["symbols"] == ["AAPL", "SPY"]
    dotted = set_toml_value("risk.min_confidence = 0.55 # gate\n", "risk", "min_confidence", 0.6)
    assert dotted == "risk.min_confidence = 0.6 # gate\n"
    with pytest.raises(ValueError, match="not a table"):
        set_toml_value("risk = 3\n", "risk", "min_confidence", 0.6)


async def test_apply_and_revert_are_recorded(tmp_path: Path) -> None:
    config = tmp_path / "perun.toml"
    config.write_text("[risk]\nmin_confidence = 0.55  # gate\n")
    settings = load_settings(config, env={"PERUN_STORAGE__PATH": str(tmp_path)},
                             use_dotenv=False)
    suggestion = Suggestion(
        id="gtest", kind="confidence_threshold", key="risk.min_confidence", old=0.55, new=0.6,
        why="signals below 0.6 lost", p_value=0.01, strength="strong",
    )
    at = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    async with await Memory.open(tmp_path / "p.db") as memory:
        change = await apply_suggestion(memory, settings, config, suggestion, now=at, environ={})
        assert settings.risk.min_confidence == 0.6  # the running settings
        assert tomllib.loads(config.read_text())["risk"]["min_confidence"] == 0.6
        assert "# gate" in config.read_text()
        assert (change.key, change.old, change.new, change.by, change.at) == (
            "risk.min_confidence", 0.55, 0.6, "user", at,
        )
        assert change.why == "signals below 0.6 lost" and change.persisted_to == str(config)
        with pytest.raises(SuggestionError, match="out of date"):
            await apply_suggestion(memory, settings, config, suggestion, environ={})
        reverted = await revert_change(memory, settings, config, change.id, environ={})
        assert reverted.reverted_at is not None and settings.risk.min_confidence == 0.55
        assert tomllib.loads(config.read_text())["risk"]["min_confidence"] == 0.55
        (stored,) = await load_changes(memory)
        assert stored.reverted_by == "user"
        with pytest.raises(SuggestionError, match="already reverted"):
            await revert_change(memory, settings, config, change.id, environ={})
        # a change a person reverted is never applied automatically again
        again = suggestion.model_copy()
        assert auto_allowed(again, settings, [stored])[0] is False
        # values outside the setting's bounds are refused before anything is written
        bad = suggestion.model_copy(update={"new": 1.5})
        with pytest.raises(SuggestionError, match="not allowed"):
            await apply_suggestion(memory, settings, config, bad, environ={})
        assert settings.risk.min_confidence == 0.55
        env = {"PERUN_RISK__MIN_CONFIDENCE": "0.55"}
        noted = await apply_suggestion(memory, settings, config, suggestion, environ=env)
        assert noted.note == (
            "PERUN_RISK__MIN_CONFIDENCE in the environment overrides the file on the next start"
        )
        # a record from before changes were always written: it ended with its run
        legacy = noted.model_copy(update={"id": "c0-old", "persisted_to": None})
        assert (legacy.in_force, legacy.state) == (False, "ended with its run")
        assert (noted.in_force, noted.state) == (True, "in force")


async def test_apply_without_a_config_file_creates_the_user_config(tmp_path: Path) -> None:
    settings = load_settings(env={"PERUN_STORAGE__PATH": str(tmp_path)}, cwd=tmp_path,
                             use_dotenv=False)
    assert settings.source == "defaults"
    user = user_config_file()  # under the test's own XDG_CONFIG_HOME (tests/conftest.py)
    assert not user.exists() and settings_file(settings) == user
    suggestion = Suggestion(id="g1", kind="confidence_threshold", key="risk.min_confidence",
                            old=0.55, new=0.6, why="w")
    async with await Memory.open(tmp_path / "p.db") as memory:
        change = await apply_suggestion(memory, settings, None, suggestion, environ={})
        assert change.persisted_to == str(user) and change.note == (
            f"created {user}: no config file was in use"
        )
        assert change.in_force
        # the next start finds the file where config loading looks
        again = load_settings(env={}, cwd=tmp_path, use_dotenv=False)
        assert again.source == str(user) and again.risk.min_confidence == 0.6
        assert user.read_text().startswith("# Perun settings.")
        reverted = await revert_change(memory, again, None, change.id, environ={})
        assert reverted.state == "reverted"
        assert tomllib.loads(user.read_text())["risk"]["min_confidence"] == 0.55
        legacy = change.model_copy(update={"id": "c9-old", "persisted_to": None})
        await memory.set_state("optimization.changes", f"[{legacy.model_dump_json()}]")
        with pytest.raises(SuggestionError, match="never written to a config file"):
            await revert_change(memory, again, None, "c9-old", environ={})


async def test_a_change_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = load_settings(env={}, cwd=tmp_path, use_dotenv=False)
    suggestion = Suggestion(id="g1", kind="confidence_threshold", key="risk.min_confidence",
                            old=0.55, new=0.6, why="w")
    async with await Memory.open(tmp_path / "p.db") as memory:
        with pytest.raises(SuggestionError, match=r"cannot write risk\.min_confidence"):
            # its directory would have to be inside a plain file
            await apply_suggestion(memory, settings, blocker / "perun.toml", suggestion)
        assert settings.risk.min_confidence == 0.55 and await load_changes(memory) == []
