"""Signal scoring: every signal, taken or not, judged by what the price did next.

A signal is scored from the stored snapshot prices at fixed horizons — *h* snapshots
(trading cycles) after the cycle that proposed it, and the last snapshot of its session
("close"). Its return is the move from the signal's reference price, signed for the action:
a buy that rose or a sell that fell is positive. A *hit* is a positive return.

This is the memory other tools keep as prose, kept as numbers: hit rate and mean return by
confidence bucket (is 0.8 really better than 0.6?), by action, by symbol, by what happened
to the signal (taken, refused by risk, rejected by a person, expired), and who was right
when a person overrode the model — a rejected signal that would have lost is a point for
the person.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from perun_tui.models import Action, Signal, SignalStatus, SignalTransition
from perun_tui.services.history import Point

CLOSE = "close"
CONFIDENCE_EDGES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLDS: tuple[float, ...] = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)

TAKEN = "taken"
REFUSED = "refused by risk"
REJECTED = "rejected by a person"
EXPIRED = "expired"
FAILED = "failed/canceled"
OPEN = "still open"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def horizon_label(h: int | str) -> str:
    return CLOSE if h == CLOSE else f"+{h}"


def binomial_p_value(hits: int, n: int) -> float | None:
    """Two-sided exact sign test of ``hits`` out of ``n`` against a fair coin."""
    if n <= 0:
        return None
    k = min(hits, n - hits)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


class HorizonStats(_Out):
    n: int = 0
    hits: int = 0
    hit_rate: float | None = None
    mean_return_pct: float | None = None
    p_value: float | None = None  # sign test of the hit rate against 50%


def horizon_stats(returns: Iterable[float | None]) -> HorizonStats:
    values = [r for r in returns if r is not None]
    if not values:
        return HorizonStats()
    hits = sum(1 for r in values if r > 0)
    return HorizonStats(
        n=len(values),
        hits=hits,
        hit_rate=hits / len(values),
        mean_return_pct=statistics.fmean(values),
        p_value=binomial_p_value(hits, len(values)),
    )


class GroupScore(_Out):
    group: str
    signals: int
    horizons: dict[str, HorizonStats] = Field(default_factory=dict)


class ThresholdRow(_Out):
    """At the primary horizon: signals below vs at-or-above a confidence threshold."""

    threshold: float
    below: HorizonStats
    above: HorizonStats


class Band(_Out):
    """Signals with confidence in [lo, lo + 0.01) at the primary horizon (sums, to add up)."""

    lo: float
    n: int
    hits: int
    total_return_pct: float


def band_stats(bands: Sequence[Band], lo: float, hi: float) -> HorizonStats:
    """Primary-horizon stats of the signals with lo ≤ confidence < hi."""
    picked = [b for b in bands if lo - 1e-9 <= b.lo < hi - 1e-9]
    n = sum(b.n for b in picked)
    if not n:
        return HorizonStats()
    hits = sum(b.hits for b in picked)
    return HorizonStats(
        n=n,
        hits=hits,
        hit_rate=hits / n,
        mean_return_pct=sum(b.total_return_pct for b in picked) / n,
        p_value=binomial_p_value(hits, n),
    )


def confidence_bands(scores: Sequence[SignalScore], horizon: str) -> list[Band]:
    bins: dict[int, list[float]] = {}
    for s in scores:
        r = s.returns.get(horizon)
        if r is not None:
            bins.setdefault(math.floor(s.signal.confidence * 100 + 1e-9), []).append(r)
    return [
        Band(
            lo=k / 100,
            n=len(v),
            hits=sum(1 for r in v if r > 0),
            total_return_pct=sum(v),
        )
        for k, v in sorted(bins.items())
    ]


class Overrides(_Out):
    """Where a person decided instead of the model, and who was right."""

    rejected: int = 0  # pending signals a person rejected
    rejected_scored: int = 0
    person_right: int = 0  # rejected and would have lost
    model_right: int = 0  # rejected but would have made money
    approved_by_person: int = 0
    approved_scored: int = 0
    approved_won: int = 0
    expired: int = 0  # waited for a person, nobody decided
    expired_would_have_won: int = 0
    horizon: str = ""

    @property
    def person_right_rate(self) -> float | None:
        return self.person_right / self.rejected_scored if self.rejected_scored else None


class SignalScoring(_Out):
    horizons: list[str] = Field(default_factory=list)
    primary: str = ""
    signals: int = 0  # buy/sell signals in the period
    scored: int = 0  # with a return at the primary horizon
    overall: GroupScore = Field(default_factory=lambda: GroupScore(group="all", signals=0))
    by_confidence: list[GroupScore] = Field(default_factory=list)
    by_action: list[GroupScore] = Field(default_factory=list)
    by_symbol: list[GroupScore] = Field(default_factory=list)
    by_disposition: list[GroupScore] = Field(default_factory=list)
    thresholds: list[ThresholdRow] = Field(default_factory=list)
    bands: list[Band] = Field(default_factory=list)
    overrides: Overrides = Field(default_factory=Overrides)
    calibration: str = ""  # one sentence: does confidence rank outcomes?


@dataclass(slots=True)
class SignalScore:
    signal: Signal
    disposition: str
    decided_by: str  # who moved it out of proposed/pending: "auto", "user", "risk", ...
    returns: dict[str, float | None] = field(default_factory=dict)


def confidence_bucket(confidence: float, edges: Sequence[float] = CONFIDENCE_EDGES) -> str:
    i = bisect.bisect_right(list(edges), confidence)
    if i == 0:
        return f"< {edges[0]:.2f}"
    if i == len(edges):
        return f"≥ {edges[-1]:.2f}"
    return f"{edges[i - 1]:.2f}–{edges[i]:.2f}"


def disposition(signal: Signal) -> str:
    s = signal.status
    if s in (SignalStatus.FILLED, SignalStatus.PARTIALLY_FILLED):
        return TAKEN
    if s is SignalStatus.REFUSED:
        return REFUSED
    if s is SignalStatus.REJECTED:
        return REJECTED
    if s is SignalStatus.EXPIRED:
        return EXPIRED
    if s in (SignalStatus.FAILED, SignalStatus.CANCELED):
        return FAILED
    return OPEN


def decided_by(transitions: Sequence[SignalTransition]) -> str:
    """Who approved, rejected or refused the signal (the first decision on record)."""
    for t in transitions:
        if t.new in (SignalStatus.APPROVED, SignalStatus.REJECTED, SignalStatus.REFUSED):
            return t.by
    for t in transitions:
        if t.new is SignalStatus.EXPIRED:
            return t.by
    return ""


def signed_return_pct(action: Action, entry: float, later: float) -> float:
    move = (later / entry - 1.0) * 100.0
    return move if action is Action.BUY else -move


def score_signals(
    signals: Sequence[Signal],
    points: Sequence[Point],
    transitions: dict[str, list[SignalTransition]] | None = None,
    horizons: Sequence[int] = (1, 5, 20),
) -> list[SignalScore]:
    """The return of every buy/sell signal at each horizon (``None``: not reached yet)."""
    transitions = transitions or {}
    by_cycle: dict[int, int] = {}
    for i, p in enumerate(points):
        if p.cycle is not None:
            by_cycle.setdefault(p.cycle, i)
    times = [p.at for p in points]
    out: list[SignalScore] = []
    for sig in signals:
        if sig.action is Action.HOLD:
            continue
        score = SignalScore(sig, disposition(sig), decided_by(transitions.get(sig.id, [])))
        out.append(score)
        idx = by_cycle.get(sig.cycle)
        if idx is None:
            idx = bisect.bisect_right(times, sig.created_at) - 1
        if sig.price <= 0 or idx < 0:
            for h in horizons:
                score.returns[horizon_label(h)] = None
            score.returns[CLOSE] = None
            continue
        for h in horizons:
            j = idx + h
            price = points[j].prices.get(sig.symbol) if j < len(points) else None
            score.returns[horizon_label(h)] = (
                signed_return_pct(sig.action, sig.price, price) if price else None
            )
        session = points[idx].session
        k = idx
        while k + 1 < len(points) and points[k + 1].session == session:
            k += 1
        close_px = points[k].prices.get(sig.symbol) if k > idx else None
        # the close of the session is only known once a later session has started
        session_over = k + 1 < len(points)
        score.returns[CLOSE] = (
            signed_return_pct(sig.action, sig.price, close_px)
            if close_px and session_over
            else None
        )
    return out


def _group(
    name: str, items: Sequence[SignalScore], labels: Sequence[str]
) -> GroupScore:
    return GroupScore(
        group=name,
        signals=len(items),
        horizons={lab: horizon_stats(s.returns.get(lab) for s in items) for lab in labels},
    )


def _groups(
    scores: Sequence[SignalScore],
    key: Callable[[SignalScore], str],
    labels: Sequence[str],
    order: Sequence[str] | None = None,
) -> list[GroupScore]:
    buckets: dict[str, list[SignalScore]] = {}
    for s in scores:
        buckets.setdefault(key(s), []).append(s)
    names = [n for n in order if n in buckets] if order else sorted(buckets)
    return [_group(n, buckets[n], labels) for n in names]


def calibration_sentence(groups: Sequence[GroupScore], horizon: str, min_n: int) -> str:
    usable = [g for g in groups if g.horizons.get(horizon, HorizonStats()).n >= min_n]
    if len(usable) < 2:
        return (
            f"not enough scored signals per confidence bucket to judge calibration "
            f"(need {min_n} per bucket at {horizon})"
        )
    rates = [g.horizons[horizon].hit_rate or 0.0 for g in usable]
    low, high = usable[0], usable[-1]
    lo_rate, hi_rate = rates[0], rates[-1]
    if hi_rate > lo_rate + 0.05:
        verdict = "higher confidence did better"
    elif hi_rate < lo_rate - 0.05:
        verdict = "higher confidence did WORSE: confidence does not rank outcomes"
    else:
        verdict = "confidence made little difference"
    return (
        f"{verdict} — {high.group}: {hi_rate:.0%} hits (n={high.horizons[horizon].n}) vs "
        f"{low.group}: {lo_rate:.0%} (n={low.horizons[horizon].n}) at {horizon}"
    )


def overrides(scores: Sequence[SignalScore], horizon: str) -> Overrides:
    o = Overrides(horizon=horizon)
    for s in scores:
        r = s.returns.get(horizon)
        if s.disposition == REJECTED and s.decided_by == "user":
            o.rejected += 1
            if r is not None:
                o.rejected_scored += 1
                if r < 0:
                    o.person_right += 1
                elif r > 0:
                    o.model_right += 1
        elif s.decided_by == "user" and s.disposition in (TAKEN, FAILED, OPEN):
            o.approved_by_person += 1
            if r is not None:
                o.approved_scored += 1
                o.approved_won += r > 0
        elif s.disposition == EXPIRED:
            o.expired += 1
            o.expired_would_have_won += bool(r is not None and r > 0)
    return o


def summarize_scores(
    scores: Sequence[SignalScore],
    horizons: Sequence[int] = (1, 5, 20),
    primary: int = 5,
    min_samples: int = 8,
) -> SignalScoring:
    labels = [horizon_label(h) for h in horizons] + [CLOSE]
    prim = horizon_label(primary)
    conf_order = [confidence_bucket(x) for x in (0.0, *CONFIDENCE_EDGES)]
    by_conf = _groups(scores, lambda s: confidence_bucket(s.signal.confidence), labels, conf_order)
    thresholds = [
        ThresholdRow(
            threshold=t,
            below=horizon_stats(s.returns.get(prim) for s in scores if s.signal.confidence < t),
            above=horizon_stats(s.returns.get(prim) for s in scores if s.signal.confidence >= t),
        )
        for t in THRESHOLDS
    ]
    return SignalScoring(
        horizons=labels,
        primary=prim,
        signals=len(scores),
        scored=sum(1 for s in scores if s.returns.get(prim) is not None),
        overall=_group("all", scores, labels),
        by_confidence=by_conf,
        by_action=_groups(scores, lambda s: s.signal.action.value, labels, ["buy", "sell"]),
        by_symbol=_groups(scores, lambda s: s.signal.symbol, labels),
        by_disposition=_groups(
            scores, lambda s: s.disposition, labels, [TAKEN, REFUSED, REJECTED, EXPIRED, FAILED,
                                                      OPEN]
        ),
        thresholds=thresholds,
        bands=confidence_bands(scores, prim),
        overrides=overrides(scores, prim),
        calibration=calibration_sentence(by_conf, prim, min_samples),
    )


class TrackRecord(_Out):
    """One symbol's scored history, compact enough for the analyst's context."""

    symbol: str
    horizon: str
    signals: int
    hit_rate: float | None
    mean_return_pct: float | None

    def describe(self) -> str:
        if not self.signals or self.hit_rate is None or self.mean_return_pct is None:
            return f"{self.symbol}: no scored signals yet"
        return (
            f"{self.symbol}: {self.signals} past signals, {self.hit_rate:.0%} right at "
            f"{self.horizon} cycles, mean {self.mean_return_pct:+.2f}%"
        )


def track_records(scores: Sequence[SignalScore], horizon: int = 5) -> dict[str, TrackRecord]:
    """Per-symbol outcomes to feed back into the analyst's recalled context."""
    label = horizon_label(horizon)
    out: dict[str, TrackRecord] = {}
    for group in _groups(scores, lambda s: s.signal.symbol, [label]):
        st = group.horizons[label]
        out[group.group] = TrackRecord(
            symbol=group.group,
            horizon=label,
            signals=st.n,
            hit_rate=st.hit_rate,
            mean_return_pct=st.mean_return_pct,
        )
    return out
