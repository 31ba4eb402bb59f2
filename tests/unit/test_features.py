"""Features from bars and quotes: hand-computed cases, short histories, no NaN ever."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from perun_tui.features import compute_all, compute_features, rsi
from perun_tui.llm.base import SymbolFeatures
from perun_tui.models import Bar, Quote

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_bars(closes: list[float], volumes: list[float] | None = None, sym: str = "AAPL") -> (
    list[Bar]
):
    vols = volumes if volumes is not None else [1000.0] * len(closes)
    return [
        Bar(symbol=sym, ts=T0 + timedelta(minutes=15 * i), open=c, high=c, low=c, close=c,
            volume=v)
        for i, (c, v) in enumerate(zip(closes, vols, strict=True))
    ]


def quote(last: float, bid: float = 0.0, ask: float = 0.0) -> Quote:
    return Quote(symbol="AAPL", ts=T0, bid=bid, ask=ask, last=last)


def all_finite(f: SymbolFeatures) -> bool:
    return all(
        math.isfinite(v) for v in f.model_dump().values() if isinstance(v, float)
    )


def test_rising_series_hand_computed() -> None:
    closes = [100.0 + i for i in range(30)]  # 100 … 129
    f = compute_features("AAPL", make_bars(closes), None)
    assert f.price == 129
    assert f.ret_1 == pytest.approx((129 / 128 - 1) * 100)
    assert f.ret_5 == pytest.approx((129 / 124 - 1) * 100)
    assert f.ret_20 == pytest.approx((129 / 109 - 1) * 100)
    assert f.sma_fast == pytest.approx(127.0)  # mean of 125..129
    assert f.sma_slow == pytest.approx(119.5)  # mean of 110..129
    assert f.trend_pct == pytest.approx((127 / 119.5 - 1) * 100)
    assert f.trend_pct > 0 and f.ret_5 > 0 and f.ret_20 > 0
    # last of a 20-step linear ramp sits 9.5 steps above its mean; pstdev = sqrt(399/12)
    assert f.zscore == pytest.approx(9.5 / math.sqrt(399 / 12))
    assert f.rsi == 100.0  # no losses at all
    rets = [(closes[i] / closes[i - 1] - 1) * 100 for i in range(len(closes) - 20, 30)]
    assert f.volatility_pct == pytest.approx(statistics.stdev(rets))
    assert f.volume_ratio == pytest.approx(1.0)
    assert f.spread_pct == 0.0
    assert f.bars == 30


def test_falling_series() -> None:
    f = compute_features("AAPL", make_bars([200.0 - 2 * i for i in range(40)]), None)
    assert f.trend_pct < 0 and f.ret_1 < 0 and f.ret_5 < 0 and f.ret_20 < 0
    assert f.zscore < 0
    assert f.rsi == 0.0


def test_constant_series_is_neutral() -> None:
    f = compute_features("AAPL", make_bars([100.1] * 60), None)
    assert f.volatility_pct == 0.0
    assert f.zscore == 0.0
    assert f.rsi == 50.0
    assert f.ret_1 == f.ret_5 == f.ret_20 == 0.0
    assert f.trend_pct == pytest.approx(0.0, abs=1e-9)
    assert f.sma_fast == pytest.approx(100.1) and f.sma_slow == pytest.approx(100.1)


def test_rsi_hand_computed() -> None:
    # changes +1, -0.5 → avg gain 0.5, avg loss 0.25 → RS 2 → RSI 66.67
    assert rsi([10.0, 11.0, 10.5]) == pytest.approx(100 - 100 / 3)
    # Wilder smoothing after the first 14 changes: 14 × +1, then one −1
    series = [float(i) for i in range(15)] + [13.0]
    avg_gain = (1.0 * 13) / 14
    avg_loss = (0.0 * 13 + 1.0) / 14
    assert rsi(series) == pytest.approx(100 - 100 / (1 + avg_gain / avg_loss))
    assert rsi([]) == 50.0 and rsi([5.0]) == 50.0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6, 19, 20, 21])
def test_short_histories_are_total(n: int) -> None:
    closes = [50.0 + (i % 3) for i in range(n)]
    f = compute_features("AAPL", make_bars(closes), None)
    assert all_finite(f)
    assert f.bars == n
    assert 0.0 <= f.rsi <= 100.0
    if n == 0:
        assert f.price == 0.0 and f.sma_fast == 0.0 and f.rsi == 50.0
    else:
        assert f.price == closes[-1]
        assert f.sma_fast == pytest.approx(statistics.fmean(closes[-5:]))
        assert f.sma_slow == pytest.approx(statistics.fmean(closes[-20:]))


def test_short_history_uses_what_is_there() -> None:
    f = compute_features("AAPL", make_bars([100.0, 102.0, 104.0]), None)
    # 5- and 20-bar returns fall back to the oldest bar available
    assert f.ret_1 == pytest.approx((104 / 102 - 1) * 100)
    assert f.ret_5 == pytest.approx(4.0)
    assert f.ret_20 == pytest.approx(4.0)
    assert f.sma_fast == f.sma_slow == pytest.approx(102.0)
    assert f.trend_pct == pytest.approx(0.0)


def test_single_bar() -> None:
    f = compute_features("AAPL", make_bars([100.0]), None)
    assert f.price == 100.0
    assert f.ret_1 == f.ret_5 == 0.0
    assert f.volatility_pct == 0.0 and f.zscore == 0.0 and f.rsi == 50.0


def test_quote_is_the_live_price() -> None:
    bars = make_bars([100.0] * 10)
    f = compute_features("AAPL", bars, quote(101.0, bid=100.9, ask=101.1))
    assert f.price == 101.0
    assert f.ret_1 == pytest.approx(1.0)  # from the previous close to the live price
    assert f.spread_pct == pytest.approx(0.2 / 101.0 * 100)
    # no bars at all: the quote alone gives a price
    g = compute_features("AAPL", [], quote(55.0))
    assert g.price == 55.0 and g.bars == 0 and all_finite(g)
    # a quote without a last trade falls back to the mid
    h = compute_features("AAPL", bars, quote(0.0, bid=99.0, ask=101.0))
    assert h.price == 100.0


def test_volume_ratio() -> None:
    vols = [100.0] * 19 + [300.0]
    f = compute_features("AAPL", make_bars([10.0] * 20, vols), None)
    assert f.volume_ratio == pytest.approx(300 / ((1900 + 300) / 20))
    # only the last 20 bars count
    vols = [10_000.0] * 10 + [100.0] * 20
    f = compute_features("AAPL", make_bars([10.0] * 30, vols), None)
    assert f.volume_ratio == pytest.approx(1.0)
    # no volume information: neutral, not a division by zero
    f = compute_features("AAPL", make_bars([10.0] * 5, [0.0] * 5), None)
    assert f.volume_ratio == 1.0


def test_bad_prices_never_give_nan() -> None:
    bars = make_bars([0.0, 0.0, 0.0])
    f = compute_features("AAPL", bars, quote(0.0))
    assert all_finite(f) and f.price == 0.0
    bars = make_bars([100.0, float("nan"), 101.0, float("inf"), 102.0],
                     [1.0, float("nan"), 2.0, 3.0, float("inf")])
    f = compute_features("AAPL", bars, Quote(symbol="AAPL", ts=T0, bid=float("nan"),
                                             ask=1.0, last=float("nan")))
    assert all_finite(f)


def test_compute_all() -> None:
    bars = {"AAPL": make_bars([1.0, 2.0]), "MSFT": make_bars([3.0, 4.0], sym="MSFT")}
    out = compute_all(bars, {"SPY": quote(5.0)}, ["AAPL", "MSFT", "SPY", "NVDA"])
    assert list(out) == ["AAPL", "MSFT", "SPY"]
    assert out["SPY"].price == 5.0


