"""The synthetic market behind the sim broker: seeded, deterministic, lazily generated.

Prices are a pure function of ``(seed, symbol, time)``: the same seed gives the same
prices whatever is asked, in whatever order, before or after a restart.

Two levels, each reproducible on its own:

* **Daily chain** (per symbol, one step per weekday from the fixed anchor ``ANCHOR``,
  generated in blocks of ``BLOCK`` weekdays, each block from its own
  ``SeedSequence((seed, symbol, 0, block))``): a hidden regime (calm / trending / volatile,
  switching every few weeks), an overnight gap, the session's log return (GBM with
  regime drift and vol, weak mean reversion towards the symbol's reference price so prices
  stay plausible for years) and occasional Poisson jumps. Weekdays that are holidays still
  get a step: it simply becomes part of the next session's opening gap.
* **Session path** (per symbol and NYSE session, from ``SeedSequence((seed, symbol, 1,
  date))``): a 1-minute path from the session's open to its close (a Brownian bridge with a
  U-shaped intraday volatility profile, the day's jumps at random minutes) with high/low
  and a U-shaped volume roughly proportional to the regime's volatility.

Generated blocks, paths and aggregated bars are cached; nothing here touches the wall clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perun_tui.market_hours import Session, TradingCalendar
from perun_tui.models import Bar, Quote

FloatArray = npt.NDArray[np.float64]

ANCHOR = dt.date(2018, 1, 1)  # a Monday; weekday index 0. Fixed forever: changing it moves prices.
BLOCK = 256  # weekdays per daily-chain block
TRADING_DAYS = 252
REGULAR_MINUTES = 390

# regimes: calm, trending, volatile
CALM, TRENDING, VOLATILE = 0, 1, 2
REGIME_NAMES = ("calm", "trending", "volatile")
_VOL_MULT = np.array([0.75, 1.0, 2.0])
_MEAN_DAYS = np.array([30.0, 18.0, 7.0])  # expected regime duration in weekdays
_JUMP_RATE = np.array([0.015, 0.025, 0.12])  # jumps per session
_TREND_DRIFT = 0.12  # trending drift per day, in units of the daily sigma
_VOLATILE_DRIFT = -0.05
_NEXT_REGIME = np.array(  # row: from, column: to (diagonal unused)
    [[0.0, 0.7, 0.3], [0.65, 0.0, 0.35], [0.6, 0.4, 0.0]]
)
_GAP_FRAC = 0.25  # overnight gap sigma as a fraction of the daily sigma
_JUMP_SD = 0.1  # jump size (log) sigma per unit of annual vol: 2.5% for a 25%-vol stock
_MEAN_REVERSION = math.log(2) / 150  # ~7 months half-life towards the reference price


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    symbol: str
    price: float  # reference price level (and the price at the anchor)
    vol: float  # annualised volatility in the calm-ish base regime
    volume: float  # average shares per minute


# plausible reference levels (late 2025), annual vol, shares per minute
_BUILTIN: dict[str, tuple[float, float, float]] = {
    "AAPL": (230.0, 0.25, 130_000),
    "MSFT": (420.0, 0.22, 55_000),
    "NVDA": (140.0, 0.45, 600_000),
    "SPY": (590.0, 0.13, 170_000),
    "QQQ": (510.0, 0.18, 110_000),
    "IWM": (225.0, 0.20, 80_000),
    "DIA": (430.0, 0.14, 9_000),
    "AMZN": (220.0, 0.30, 110_000),
    "GOOGL": (190.0, 0.28, 80_000),
    "GOOG": (192.0, 0.28, 55_000),
    "META": (600.0, 0.33, 35_000),
    "TSLA": (350.0, 0.55, 250_000),
    "AMD": (125.0, 0.45, 120_000),
    "AVGO": (230.0, 0.40, 60_000),
    "NFLX": (110.0, 0.35, 90_000),
    "JPM": (240.0, 0.22, 25_000),
    "BAC": (45.0, 0.25, 95_000),
    "XOM": (110.0, 0.22, 40_000),
    "BRK.B": (470.0, 0.15, 10_000),
    "V": (340.0, 0.20, 18_000),
    "KO": (70.0, 0.14, 35_000),
    "WMT": (95.0, 0.18, 45_000),
    "COST": (950.0, 0.20, 5_000),
    "DIS": (110.0, 0.25, 25_000),
    "INTC": (22.0, 0.45, 180_000),
    "PLTR": (80.0, 0.60, 180_000),
}


def _key(text: str) -> int:
    """A stable 64-bit integer for a string (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def weekday_index(day: dt.date) -> int:
    """Weekdays between ``ANCHOR`` and ``day`` (``day`` itself must be a weekday)."""
    weeks, rest = divmod((day - ANCHOR).days, 7)
    return weeks * 5 + min(rest, 4)


def spec_for(symbol: str, seed: int) -> SymbolSpec:
    """The built-in spec, or a seeded one (price 20–500, vol 20–60%) for other symbols."""
    builtin = _BUILTIN.get(symbol)
    if builtin is not None:
        return SymbolSpec(symbol, *builtin)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _key(symbol), 7]))
    price = float(math.exp(rng.uniform(math.log(20), math.log(500))))
    vol = float(rng.uniform(0.20, 0.60))
    volume = float(math.exp(rng.uniform(math.log(5_000), math.log(100_000))))
    return SymbolSpec(symbol, round(price, 2), vol, round(volume))


@dataclass(slots=True)
class _Chain:
    """The daily chain of one symbol, weekday index 0 .. len-1."""

    open_log: FloatArray
    close_log: FloatArray
    vol_mult: FloatArray
    regime: npt.NDArray[np.int8]
    jump1: FloatArray  # 0.0 when there is no jump that day
    jump2: FloatArray
    # carried into the next block
    last_log: float
    state: int
    trend_sign: float
    remaining: int


@dataclass(frozen=True, slots=True)
class SessionPath:
    """The 1-minute bars of one symbol in one session (bar k covers open+k .. open+k+1 min)."""

    session: Session
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    vol_mult: float
    # the same closes and volumes as Python floats: quotes read one at a time, and a
    # list index is far cheaper than a numpy scalar
    closes: list[float]
    volumes: list[float]
    minutes: int


@dataclass(frozen=True, slots=True)
class _Agg:
    """A session's bars aggregated to one timeframe, on buckets aligned to the open."""

    start: dt.datetime
    tf: int
    ts: list[dt.datetime]  # each bar's start
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]


SESSIONS_KEPT = 6  # per symbol, in the path and bar caches


class SimMarket:
    """Deterministic synthetic prices for a set of symbols on the NYSE calendar."""

    def __init__(
        self,
        symbols: list[str],
        calendar: TradingCalendar,
        *,
        seed: int = 42,
        path_cache: int | None = None,
        agg_cache: int | None = None,
    ) -> None:
        self.seed = seed % 2**63
        self.calendar = calendar
        self._specs: dict[str, SymbolSpec] = {}
        for sym in [*symbols, *_BUILTIN]:
            sym = sym.strip().upper()
            if sym and sym not in self._specs:
                self._specs[sym] = spec_for(sym, self.seed)
        self._chains: dict[str, _Chain] = {}
        self._paths: OrderedDict[tuple[str, dt.date], SessionPath] = OrderedDict()
        self._aggs: OrderedDict[tuple[str, dt.date, int], _Agg] = OrderedDict()
        # Bounded by the universe, not the run: a cycle needs a symbol's last few sessions
        # (history bars reach back about two), so a long run must not keep every session
        # it ever generated.
        n = max(len({s.strip().upper() for s in symbols}), 4)
        self._path_cache = path_cache if path_cache is not None else SESSIONS_KEPT * n
        self._agg_cache = agg_cache if agg_cache is not None else 4 * SESSIONS_KEPT * n
        self._prev: dict[dt.date, Session | None] = {}  # session date -> previous session
        self._close_prices: dict[tuple[str, dt.date], float] = {}

    # ----------------------------------------------------------------------- symbols

    @property
    def symbols(self) -> list[str]:
        return list(self._specs)

    def knows(self, symbol: str) -> bool:
        return symbol in self._specs

    def spec(self, symbol: str) -> SymbolSpec:
        return self._specs[symbol]

    # ----------------------------------------------------------------------- daily chain

    def _chain(self, symbol: str, index: int) -> _Chain:
        chain = self._chains.get(symbol)
        if chain is None:
            spec = self._specs[symbol]
            base = math.log(spec.price)
            empty = np.empty(0)
            chain = _Chain(
                empty, empty, empty, np.empty(0, dtype=np.int8), empty, empty,
                last_log=base, state=CALM, trend_sign=1.0, remaining=0,
            )
            self._chains[symbol] = chain
        while chain.close_log.shape[0] <= index:
            self._extend(symbol, chain)
        return chain

    def _extend(self, symbol: str, chain: _Chain) -> None:
        spec = self._specs[symbol]
        block = chain.close_log.shape[0] // BLOCK
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _key(symbol), 0, block]))
        z_gap = rng.standard_normal(BLOCK)
        z_day = rng.standard_normal(BLOCK)
        u_jump = rng.random(BLOCK)
        jumps = rng.standard_normal((2, BLOCK)) * (_JUMP_SD * spec.vol)
        # regime segments: few draws, sequential, carried across blocks
        regime = np.empty(BLOCK, dtype=np.int8)
        sign = np.empty(BLOCK)
        state, trend_sign, remaining = chain.state, chain.trend_sign, chain.remaining
        pos = 0
        while pos < BLOCK:
            if remaining <= 0:
                if block or pos:  # the very first segment starts calm
                    row = _NEXT_REGIME[state]
                    state = int(np.searchsorted(np.cumsum(row), rng.random(), side="right"))
                    state = min(state, VOLATILE)
                trend_sign = 1.0 if rng.random() < 0.55 else -1.0
                remaining = int(rng.geometric(1.0 / _MEAN_DAYS[state]))
            take = min(remaining, BLOCK - pos)
            regime[pos : pos + take] = state
            sign[pos : pos + take] = trend_sign
            pos += take
            remaining -= take

        sigma = spec.vol / math.sqrt(TRADING_DAYS)
        vm = _VOL_MULT[regime]
        sd = sigma * vm
        drift = np.where(
            regime == TRENDING, _TREND_DRIFT * sigma * sign,
            np.where(regime == VOLATILE, _VOLATILE_DRIFT * sigma, 0.0),
        )
        rate = _JUMP_RATE[regime]
        p0 = np.exp(-rate)
        count = (u_jump >= p0).astype(np.int64) + (u_jump >= p0 * (1 + rate)).astype(np.int64)
        jump1 = np.where(count >= 1, jumps[0], 0.0)
        jump2 = np.where(count >= 2, jumps[1], 0.0)
        gap = z_gap * sd * _GAP_FRAC
        # step e_i = gap + drift - sd²/2 + sd·z + jumps, plus mean reversion:
        # x_i = a·x_{i-1} + e_i with x = log price − log reference, a = 1 − κ.
        step = gap + drift - 0.5 * sd * sd + sd * z_day + jump1 + jump2
        a = 1.0 - _MEAN_REVERSION
        powers = a ** np.arange(1, BLOCK + 1)
        x0 = chain.last_log - math.log(spec.price)
        x = powers * (x0 + np.cumsum(step / powers))
        close_log = x + math.log(spec.price)
        prev_close = np.concatenate(([chain.last_log], close_log[:-1]))
        # mean reversion acts intraday; the gap is the overnight part of the step
        open_log = prev_close + gap

        chain.open_log = np.concatenate((chain.open_log, open_log))
        chain.close_log = np.concatenate((chain.close_log, close_log))
        chain.vol_mult = np.concatenate((chain.vol_mult, vm))
        chain.regime = np.concatenate((chain.regime, regime))
        chain.jump1 = np.concatenate((chain.jump1, jump1))
        chain.jump2 = np.concatenate((chain.jump2, jump2))
        chain.last_log = float(close_log[-1])
        chain.state, chain.trend_sign, chain.remaining = state, trend_sign, remaining

    def regime(self, symbol: str, day: dt.date) -> str:
        """The hidden regime on a weekday (for tests and curiosity; not shown to the model)."""
        i = weekday_index(day)
        return REGIME_NAMES[int(self._chain(symbol, i).regime[i])]

    def session_close_price(self, symbol: str, session: Session) -> float:
        key = (symbol, session.date)
        price = self._close_prices.get(key)
        if price is None:
            i = weekday_index(session.date)
            price = self._close_prices[key] = float(math.exp(self._chain(symbol, i).close_log[i]))
        return price

    # ----------------------------------------------------------------------- sessions

    def covers(self, session: Session) -> bool:
        return session.date >= ANCHOR

    def previous_session(self, session: Session) -> Session | None:
        """The session before ``session`` (cached: walking back costs the calendar once)."""
        if session.date in self._prev:
            return self._prev[session.date]
        try:
            prev: Session | None = self.calendar.previous_session(session.open)
        except LookupError:
            prev = None
        if prev is not None and not self.covers(prev):
            prev = None
        self._prev[session.date] = prev
        return prev

    # ----------------------------------------------------------------------- 1-min paths

    def path(self, symbol: str, session: Session) -> SessionPath:
        key = (symbol, session.date)
        cached = self._paths.get(key)
        if cached is not None:
            self._paths.move_to_end(key)
            return cached
        path = self._generate(symbol, session)
        self._paths[key] = path
        if len(self._paths) > self._path_cache:
            self._paths.popitem(last=False)
        return path

    def _generate(self, symbol: str, session: Session) -> SessionPath:
        if not self.covers(session):
            raise LookupError(f"the sim market starts on {ANCHOR.isoformat()}")
        spec = self._specs[symbol]
        i = weekday_index(session.date)
        chain = self._chain(symbol, i)
        open_log = float(chain.open_log[i])
        close_log = float(chain.close_log[i])
        vm = float(chain.vol_mult[i])
        j1, j2 = float(chain.jump1[i]), float(chain.jump2[i])
        m = max(1, round((session.close - session.open).total_seconds() / 60))

        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, _key(symbol), 1, session.date.toordinal()])
        )
        z = rng.standard_normal(m)
        hl = np.abs(rng.standard_normal((2, m)))
        noise = rng.standard_normal(m)
        where = rng.integers(0, m, size=2)

        x = (np.arange(m) + 0.5) / REGULAR_MINUTES
        u = (2 * x - 1) ** 2
        w = np.sqrt(0.6 + 1.2 * u)  # intraday vol profile, mean w² = 1 over a full session
        sigma_min = spec.vol / math.sqrt(TRADING_DAYS) * vm / math.sqrt(REGULAR_MINUTES)
        free = z * sigma_min * w
        target = close_log - open_log - j1 - j2
        inc = free + (target - free.sum()) * (w * w) / float((w * w).sum())
        inc[int(where[0])] += j1
        inc[int(where[1])] += j2
        cum = open_log + np.cumsum(inc)
        cum[-1] = close_log  # the path ends exactly at the chain's close
        close = np.exp(cum)
        opens = np.concatenate(([math.exp(open_log)], close[:-1]))
        spread = 0.6 * sigma_min * w
        high = np.maximum(opens, close) * np.exp(hl[0] * spread)
        low = np.minimum(opens, close) * np.exp(-hl[1] * spread)

        shape = (0.45 + 2.2 * u) / (0.45 + 2.2 / 3)  # U shape, mean ≈ 1
        jumpy = np.zeros(m)
        if j1:
            jumpy[int(where[0])] += 4.0
        if j2:
            jumpy[int(where[1])] += 4.0
        volume = (
            spec.volume * vm * shape * np.exp(0.3 * noise - 0.045)
            * (0.8 + 0.2 * np.abs(z)) * (1.0 + jumpy)
        )
        volume = np.maximum(np.rint(volume), 100.0)
        return SessionPath(
            session, opens, high, low, close, volume, vm, close.tolist(), volume.tolist(), m
        )

    # ----------------------------------------------------------------------- quotes

    def half_spread(self, symbol: str, price: float, vol_mult: float) -> float:
        spec = self._specs[symbol]
        bps = 1.0 + 6.0 * spec.vol * vol_mult  # ~2.5 bps for a calm large cap
        return max(0.005, price * bps / 20_000)

    def quote(self, symbol: str, at: dt.datetime, session: Session | None) -> Quote | None:
        """Quote at ``at``; ``session`` is the session in progress then (None if closed)."""
        state = self.last_trade(symbol, at, session)
        if state is None:
            return None
        return self._quote(symbol, *state)

    def quotes(
        self, symbols: Iterable[str], at: dt.datetime, session: Session | None
    ) -> dict[str, Quote]:
        """``quote(symbol, at, session)`` of many symbols (those that have one), with the
        per-call work done once."""
        if session is None or not self.covers(session):
            out: dict[str, Quote] = {}
            for sym in symbols:
                quote = self.quote(sym, at, session)
                if quote is not None:
                    out[sym] = quote
            return out
        done = int((at - session.open).total_seconds() // 60)
        quotes: dict[str, Quote] = {}
        for sym in symbols:
            path = self.path(sym, session)
            k = min(done, path.minutes)
            if k <= 0:
                state = (float(path.open[0]), path.volumes[0], session.open, path.vol_mult)
            else:
                state = (path.closes[k - 1], path.volumes[k - 1], session.open + _MINUTES[k],
                         path.vol_mult)
            quotes[sym] = self._quote(sym, *state)
        return quotes

    def _quote(
        self, symbol: str, last: float, volume: float, ts: dt.datetime, vm: float
    ) -> Quote:
        half = self.half_spread(symbol, last, vm)
        bid = math.floor((last - half) * 100) / 100
        ask = math.ceil((last + half) * 100) / 100
        if ask - bid < 0.01:
            ask = bid + 0.01
        return Quote(
            symbol=symbol, ts=ts, bid=round(bid, 2), ask=round(ask, 2), last=round(last, 4),
            volume=volume,
        )

    def last_prices(
        self, symbols: Iterable[str], at: dt.datetime, session: Session | None
    ) -> dict[str, float]:
        """``last_trade(symbol, at, session)[0]`` of many symbols (those that have one),
        with the per-call work done once."""
        if session is None or not self.covers(session):
            out: dict[str, float] = {}
            for sym in symbols:
                state = self.last_trade(sym, at, session)
                if state is not None:
                    out[sym] = state[0]
            return out
        done = int((at - session.open).total_seconds() // 60)
        prices: dict[str, float] = {}
        for sym in symbols:
            path = self.path(sym, session)
            k = min(done, path.minutes)
            prices[sym] = path.closes[k - 1] if k > 0 else float(path.open[0])
        return prices

    def last_trade(
        self, symbol: str, at: dt.datetime, session: Session | None
    ) -> tuple[float, float, dt.datetime, float] | None:
        """``(last price, minute volume, as of, vol multiplier)`` at ``at``."""
        if session is None:
            try:
                session = self.calendar.previous_session(at)
            except LookupError:
                return None
            if not self.covers(session):
                return None
            path = self.path(symbol, session)
            return path.closes[-1], path.volumes[-1], session.close, path.vol_mult
        if not self.covers(session):
            return None
        path = self.path(symbol, session)
        done = min(int((at - session.open).total_seconds() // 60), path.minutes)
        if done <= 0:
            return float(path.open[0]), path.volumes[0], session.open, path.vol_mult
        ts = session.open + _MINUTES[done]
        return path.closes[done - 1], path.volumes[done - 1], ts, path.vol_mult

    # ----------------------------------------------------------------------- bars

    def _agg(self, symbol: str, session: Session, tf: int) -> _Agg:
        key = (symbol, session.date, tf)
        cached = self._aggs.get(key)
        if cached is not None:
            self._aggs.move_to_end(key)
            return cached
        path = self.path(symbol, session)
        m = path.minutes
        starts = np.arange(0, m, tf)
        ends = np.minimum(starts + tf, m)
        agg = _Agg(
            start=session.open,
            tf=tf,
            ts=[session.open + dt.timedelta(minutes=int(k)) for k in starts],
            open=np.round(path.open[starts], 4).tolist(),
            high=np.round(np.maximum.reduceat(path.high, starts), 4).tolist(),
            low=np.round(np.minimum.reduceat(path.low, starts), 4).tolist(),
            close=np.round(path.close[ends - 1], 4).tolist(),
            volume=np.add.reduceat(path.volume, starts).tolist(),
        )
        self._aggs[key] = agg
        if len(self._aggs) > self._agg_cache:
            self._aggs.popitem(last=False)
        return agg

    def bars(
        self, symbol: str, tf: int, n: int, at: dt.datetime, latest: Session
    ) -> list[Bar]:
        """Up to ``n`` completed ``tf``-minute bars at ``at``, oldest first.

        ``latest`` is the session in progress at ``at`` or the most recent one before it.
        """
        if n <= 0:
            return []
        chunks: list[list[Bar]] = []
        have = 0
        session: Session | None = latest if self.covers(latest) else None
        while session is not None and have < n:
            agg = self._agg(symbol, session, tf)
            k = len(agg.open)
            if at < session.close:
                k = min(k, int((at - session.open).total_seconds() // (60 * tf)))
            take = min(k, n - have)
            if take > 0:
                first = k - take
                chunks.append([_bar(symbol, agg, j) for j in range(first, k)])
                have += take
            session = self.previous_session(session)
        out: list[Bar] = []
        for chunk in reversed(chunks):
            out.extend(chunk)
        return out


def _bar(symbol: str, agg: _Agg, j: int) -> Bar:
    return Bar(
        symbol=symbol, ts=agg.ts[j], open=agg.open[j], high=agg.high[j], low=agg.low[j],
        close=agg.close[j], volume=agg.volume[j],
    )


_MINUTES = [dt.timedelta(minutes=k) for k in range(24 * 60 + 1)]
