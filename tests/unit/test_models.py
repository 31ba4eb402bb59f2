"""The signal lifecycle is a state machine: only the documented moves are legal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perun_tui.models import (
    SIGNAL_TRANSITIONS,
    Action,
    IllegalTransition,
    Signal,
    SignalStatus,
)

AT = datetime(2026, 11, 30, 15, tzinfo=UTC)
FINAL = {
    SignalStatus.REFUSED,
    SignalStatus.REJECTED,
    SignalStatus.EXPIRED,
    SignalStatus.FILLED,
    SignalStatus.CANCELED,
    SignalStatus.FAILED,
}


def signal() -> Signal:
    return Signal(
        id="s1", cycle=1, symbol="AAPL", action=Action.BUY, confidence=0.7, rationale="r",
        analyst="rules", created_at=AT, price=100.0,
    )


def test_every_status_has_its_moves_and_final_ones_have_none() -> None:
    assert set(SIGNAL_TRANSITIONS) == set(SignalStatus)
    for status in FINAL:
        assert SIGNAL_TRANSITIONS[status] == frozenset(), status


def test_the_happy_path_is_recorded_move_by_move() -> None:
    s = signal()
    path = [SignalStatus.PENDING, SignalStatus.APPROVED, SignalStatus.SUBMITTED,
            SignalStatus.FILLED]
    records = [s.transition(new, by="test", reason=new.value, at=AT) for new in path]
    assert [(r.old, r.new) for r in records] == list(
        zip([SignalStatus.PROPOSED, *path[:-1]], path, strict=True)
    )
    assert s.status is SignalStatus.FILLED


@pytest.mark.parametrize(
    "path",
    [
        [SignalStatus.FILLED],  # never filled without an order
        [SignalStatus.SUBMITTED],  # never submitted without approval
        [SignalStatus.PENDING, SignalStatus.SUBMITTED],  # a pending signal needs approval
        [SignalStatus.REFUSED, SignalStatus.APPROVED],  # refused by risk is final
        [SignalStatus.PENDING, SignalStatus.EXPIRED, SignalStatus.APPROVED],
    ],
)
def test_illegal_moves_are_refused_and_change_nothing(path: list[SignalStatus]) -> None:
    s = signal()
    *legal, illegal = path
    for new in legal:
        s.transition(new, by="test", reason="", at=AT)
    before = s.status
    with pytest.raises(IllegalTransition):
        s.transition(illegal, by="test", reason="", at=AT)
    assert s.status is before
