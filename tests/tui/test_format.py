from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perun_tui.models import MarketClock
from perun_tui.tui.format import duration, market_line, qty, sparkline, time_left

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # 11:00 ET


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5], 8) == "▄▄▄"
    assert sparkline([], 8) == ""
    assert len(sparkline(list(range(100)), 16)) == 16


def test_durations_and_quantities() -> None:
    assert duration(45) == "45s"
    assert duration(125) == "2m05s"
    assert duration(3720) == "1h02m"
    assert duration(-5) == "0s"
    assert qty(12.0) == "12"
    assert qty(0.125) == "0.125"
    assert time_left(NOW - timedelta(seconds=1), NOW) == "expired"
    assert time_left(None, NOW) == "–"


def test_market_line_in_exchange_time() -> None:
    open_ = MarketClock(ts=NOW, is_open=True, next_open=NOW + timedelta(days=1),
                        next_close=datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    assert market_line(open_, NOW) == "NYSE open · closes 16:00 ET"
    friday = datetime(2026, 3, 13, 21, 0, tzinfo=UTC)
    closed = MarketClock(ts=friday, is_open=False,
                         next_open=datetime(2026, 3, 16, 13, 30, tzinfo=UTC),
                         next_close=datetime(2026, 3, 16, 20, 0, tzinfo=UTC))
    assert market_line(closed, friday) == "NYSE closed · opens Mon 09:30 ET"
