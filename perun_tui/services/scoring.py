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

**Evidence is counted once.** Signals on one symbol whose outcome windows overlap (a sell
idea repeated every cycle of a downtrend, scored 5 cycles later) share the same price
moves; counting each as separate evidence would make chance look like a pattern. So every
statistic shows all scored signals, but the p-values use only the *independent* ones:
per symbol, in time order, a signal counts when its window starts after the last counted
one's ended (``h`` cycles later; for "close", the next session). The tests are exact: a
sign test of hits against a coin flip, and Fisher's exact test for two groups.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from pydantic import Field

from perun_tui.llm.base import AnalysisResult
from perun_tui.models import (
    Action,
    Quote,
    Signal,
    SignalStatus,
    SignalTransition,
    signal_id_for,
)
from perun_tui.services.history import Point
from perun_tui.services.memory import EXCHANGE_TZ
from perun_tui.services.report_model import ReportModel

CLOSE = "close"
CONFIDENCE_EDGES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLDS: tuple[float, ...] = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)

TAKEN = "taken"
REFUSED = "refused by risk"
NOT_PROPOSED = "not proposed (limits)"
REJECTED = "rejected by a person"
EXPIRED = "expired"
FAILED = "failed/canceled"
OPEN = "still open"

ANALYST_LIMITS = "analyst limits"  # who refused an idea the analyst did not propose


def horizon_label(h: int | str) -> str:
    return CLOSE if h == CLOSE else f"+{h}"


def binomial_p_value(hits: int, n: int) -> float | None:
    """Two-sided exact sign test of ``hits`` out of ``n`` against a fair coin."""
    if n <= 0:
        return None
    k = min(hits, n - hits)
    # P(X ≤ k) summed in floats from its largest term C(n, k) / 2**n down, each term from
    # the one above it: exact integers cost O(n²) (seconds per report after a few thousand
    # signals) and 2.0**n overflows a float from n = 1024
    term = math.exp(
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    )
    tail = 0.0
    for i in range(k, -1, -1):
        tail += term
        if term <= tail * 1e-17:  # the terms only shrink from here: nothing left to add
            break
        term *= i / (n - i + 1)
    return min(1.0, 2.0 * tail)


Alternative = Literal["two-sided", "less", "greater"]


def fisher_exact_p(
    hits_a: int, n_a: int, hits_b: int, n_b: int, alternative: Alternative = "two-sided"
) -> float | None:
    """Fisher's exact test of the 2×2 table [[hits_a, n_a - hits_a], [hits_b, n_b - hits_b]]:
    how likely a split of the hits at least this uneven is when both groups share one hit
    rate. ``less``: group a's rate is lower; ``greater``: higher; two-sided: either way
    (the tables no more likely than the one observed, as in R and SciPy)."""
    if n_a <= 0 or n_b <= 0:
        return None
    if not (0 <= hits_a <= n_a and 0 <= hits_b <= n_b):
        raise ValueError("hits must be between 0 and n")
    total, hits = n_a + n_b, hits_a + hits_b
    lo, hi = max(0, n_a - (total - hits)), min(n_a, hits)
    weights = {k: math.comb(hits, k) * math.comb(total - hits, n_a - k) for k in range(lo, hi + 1)}
    whole = math.comb(total, n_a)
    if alternative == "less":
        tail = sum(w for k, w in weights.items() if k <= hits_a)
    elif alternative == "greater":
        tail = sum(w for k, w in weights.items() if k >= hits_a)
    else:
        seen = weights[hits_a]
        tail = sum(w for w in weights.values() if w <= seen)  # exact integers: no tolerance
    return min(1.0, tail / whole)


class HorizonStats(ReportModel):
    n: int = 0
    hits: int = 0
    hit_rate: float | None = None
    mean_return_pct: float | None = None
    independent: int = 0  # of n, with non-overlapping outcome windows (see the module doc)
    independent_hits: int = 0
    p_value: float | None = None  # sign test of the independent hits against 50%


def horizon_stats(returns: Iterable[float | tuple[float | None, bool] | None]) -> HorizonStats:
    """Stats of returns; each may come with its independence flag (default: independent)."""
    values: list[float] = []
    flags: list[bool] = []
    for item in returns:
        r, independent = item if isinstance(item, tuple) else (item, True)
        if r is not None:
            values.append(r)
            flags.append(independent)
    if not values:
        return HorizonStats()
    hits = sum(1 for r in values if r > 0)
    n_ind = sum(flags)
    hits_ind = sum(1 for r, f in zip(values, flags, strict=True) if f and r > 0)
    return HorizonStats(
        n=len(values),
        hits=hits,
        hit_rate=hits / len(values),
        mean_return_pct=statistics.fmean(values),
        independent=n_ind,
        independent_hits=hits_ind,
        p_value=binomial_p_value(hits_ind, n_ind),
    )


class GroupScore(ReportModel):
    group: str
    signals: int
    horizons: dict[str, HorizonStats] = Field(default_factory=dict)


class ThresholdRow(ReportModel):
    """At the primary horizon: signals below vs at-or-above a confidence threshold."""

    threshold: float
    below: HorizonStats
    above: HorizonStats


class Band(ReportModel):
    """Signals with confidence in [lo, lo + 0.01) at the primary horizon (sums, to add up)."""

    lo: float
    n: int
    hits: int
    total_return_pct: float
    independent: int = 0
    independent_hits: int = 0


def band_stats(bands: Sequence[Band], lo: float, hi: float) -> HorizonStats:
    """Primary-horizon stats of the signals with lo ≤ confidence < hi."""
    picked = [b for b in bands if lo - 1e-9 <= b.lo < hi - 1e-9]
    n = sum(b.n for b in picked)
    if not n:
        return HorizonStats()
    hits = sum(b.hits for b in picked)
    n_ind = sum(b.independent for b in picked)
    hits_ind = sum(b.independent_hits for b in picked)
    return HorizonStats(
        n=n,
        hits=hits,
        hit_rate=hits / n,
        mean_return_pct=sum(b.total_return_pct for b in picked) / n,
        independent=n_ind,
        independent_hits=hits_ind,
        p_value=binomial_p_value(hits_ind, n_ind),
    )


def confidence_bands(
    scores: Sequence[SignalScore], horizon: str, independent: Collection[str] | None = None
) -> list[Band]:
    bins: dict[int, list[tuple[float, bool]]] = {}
    for s in scores:
        r = s.returns.get(horizon)
        if r is not None:
            flag = independent is None or s.signal.id in independent
            bins.setdefault(math.floor(s.signal.confidence * 100 + 1e-9), []).append((r, flag))
    return [
        Band(
            lo=k / 100,
            n=len(v),
            hits=sum(1 for r, _ in v if r > 0),
            total_return_pct=sum(r for r, _ in v),
            independent=sum(1 for _, f in v if f),
            independent_hits=sum(1 for r, f in v if f and r > 0),
        )
        for k, v in sorted(bins.items())
    ]


def independent_ids(scores: Sequence[SignalScore], horizon: str) -> set[str]:
    """The signals that count as separate evidence at ``horizon``: per symbol, in time
    order, one whose outcome window starts after the last counted one's window ended."""
    step = None if horizon == CLOSE else int(horizon.lstrip("+"))
    last: dict[str, int | date] = {}
    out: set[str] = set()
    scored = [s for s in scores if s.returns.get(horizon) is not None]
    for s in sorted(scored, key=lambda s: (s.signal.created_at, s.signal.cycle, s.signal.id)):
        sym = s.signal.symbol
        mark: int | date = (
            s.signal.cycle if step is not None
            else s.signal.created_at.astimezone(EXCHANGE_TZ).date()
        )
        prev = last.get(sym)
        if prev is not None:
            if step is not None:
                assert isinstance(mark, int) and isinstance(prev, int)
                if mark - prev < step:
                    continue
            elif mark == prev:
                continue
        last[sym] = mark
        out.add(s.signal.id)
    return out


class Overrides(ReportModel):
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


class Comparison(ReportModel):
    """Two groups' hit rates at one horizon, compared with Fisher's exact test on their
    independent signals."""

    low: str
    high: str
    low_stats: HorizonStats
    high_stats: HorizonStats
    p_value: float | None


class SignalScoring(ReportModel):
    horizons: list[str] = Field(default_factory=list)
    primary: str = ""
    signals: int = 0  # buy/sell signals in the period
    scored: int = 0  # with a return at the primary horizon
    independent: int = 0  # of those, with non-overlapping outcome windows
    overall: GroupScore = Field(default_factory=lambda: GroupScore(group="all", signals=0))
    by_confidence: list[GroupScore] = Field(default_factory=list)
    by_action: list[GroupScore] = Field(default_factory=list)
    by_symbol: list[GroupScore] = Field(default_factory=list)
    by_disposition: list[GroupScore] = Field(default_factory=list)
    thresholds: list[ThresholdRow] = Field(default_factory=list)
    bands: list[Band] = Field(default_factory=list)
    overrides: Overrides = Field(default_factory=Overrides)
    calibration: str = ""  # one sentence: does confidence rank outcomes?
    calibration_test: Comparison | None = None  # lowest vs highest bucket, Fisher's test


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


def dropped_signals(
    result: AnalysisResult,
    cycle: int,
    quotes: Mapping[str, Quote],
    at: datetime,
    salt: str = "",
) -> list[tuple[Signal, SignalTransition]]:
    """The ideas the analyst did not propose (``result.dropped_ideas``) as signals refused
    by ``ANALYST_LIMITS``, with the price and confidence they had — so that scoring covers
    every idea, taken or not. Ideas without a quote cannot be scored and are left out."""
    out: list[tuple[Signal, SignalTransition]] = []
    for idea in result.dropped_ideas:
        quote = quotes.get(idea.symbol)
        if quote is None or quote.last <= 0 or idea.action is Action.HOLD:
            continue
        signal = Signal(
            id=signal_id_for(cycle, idea.symbol, idea.action, f"{salt}|dropped"),
            cycle=cycle,
            symbol=idea.symbol,
            action=idea.action,
            confidence=idea.confidence,
            rationale=idea.rationale,
            analyst=result.analyst,
            created_at=at,
            price=quote.last,
        )
        move = signal.transition(SignalStatus.REFUSED, by=ANALYST_LIMITS, reason=idea.reason,
                                 at=at)
        out.append((signal, move))
    return out


def disposition(signal: Signal, by: str = "") -> str:
    s = signal.status
    if s in (SignalStatus.FILLED, SignalStatus.PARTIALLY_FILLED):
        return TAKEN
    if s is SignalStatus.REFUSED:
        return NOT_PROPOSED if by == ANALYST_LIMITS else REFUSED
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
        by = decided_by(transitions.get(sig.id, []))
        score = SignalScore(sig, disposition(sig, by), by)
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


Independence = Mapping[str, Collection[str]]  # horizon label -> independent signal ids


def _group(
    name: str,
    items: Sequence[SignalScore],
    labels: Sequence[str],
    independent: Independence | None = None,
) -> GroupScore:
    def flagged(s: SignalScore, lab: str) -> tuple[float | None, bool]:
        ids = None if independent is None else independent.get(lab)
        return s.returns.get(lab), ids is None or s.signal.id in ids

    return GroupScore(
        group=name,
        signals=len(items),
        horizons={lab: horizon_stats(flagged(s, lab) for s in items) for lab in labels},
    )


def _groups(
    scores: Sequence[SignalScore],
    key: Callable[[SignalScore], str],
    labels: Sequence[str],
    order: Sequence[str] | None = None,
    independent: Independence | None = None,
) -> list[GroupScore]:
    buckets: dict[str, list[SignalScore]] = {}
    for s in scores:
        buckets.setdefault(key(s), []).append(s)
    names = [n for n in order if n in buckets] if order else sorted(buckets)
    return [_group(n, buckets[n], labels, independent) for n in names]


def compare_buckets(
    groups: Sequence[GroupScore], horizon: str, min_n: int
) -> Comparison | None:
    """The lowest and highest confidence buckets with at least ``min_n`` independent
    scored signals, or None when fewer than two have that many."""
    usable = [g for g in groups if g.horizons.get(horizon, HorizonStats()).independent >= min_n]
    if len(usable) < 2:
        return None
    low, high = usable[0], usable[-1]
    lo, hi = low.horizons[horizon], high.horizons[horizon]
    return Comparison(
        low=low.group,
        high=high.group,
        low_stats=lo,
        high_stats=hi,
        p_value=fisher_exact_p(hi.independent_hits, hi.independent, lo.independent_hits,
                               lo.independent),
    )


def calibration_sentence(comparison: Comparison | None, horizon: str, min_n: int) -> str:
    """Does confidence rank outcomes? One sentence with the test behind the answer."""
    if comparison is None:
        return (
            "not enough independent scored signals per confidence bucket to judge "
            f"calibration (need {min_n} in at least two buckets at {horizon})"
        )
    lo, hi = comparison.low_stats, comparison.high_stats
    lo_rate = lo.independent_hits / lo.independent
    hi_rate = hi.independent_hits / hi.independent
    p = comparison.p_value if comparison.p_value is not None else 1.0
    if p > 0.2:
        verdict = "no clear difference between confidence levels (could well be chance)"
    elif hi_rate > lo_rate:
        verdict = "higher confidence did better"
    else:
        verdict = "higher confidence did WORSE: confidence does not rank outcomes"
    return (
        f"{verdict} — {comparison.high}: {hi.independent_hits} of {hi.independent} right "
        f"({hi_rate:.0%}) vs {comparison.low}: {lo.independent_hits} of {lo.independent} "
        f"({lo_rate:.0%}), independent signals at {horizon}; Fisher's exact p = {p:.2f}"
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
    ind: dict[str, set[str]] = {lab: independent_ids(scores, lab) for lab in labels}
    conf_order = [confidence_bucket(x) for x in (0.0, *CONFIDENCE_EDGES)]
    by_conf = _groups(
        scores, lambda s: confidence_bucket(s.signal.confidence), labels, conf_order, ind
    )

    def at_primary(s: SignalScore) -> tuple[float | None, bool]:
        return s.returns.get(prim), s.signal.id in ind[prim]

    thresholds = [
        ThresholdRow(
            threshold=t,
            below=horizon_stats(at_primary(s) for s in scores if s.signal.confidence < t),
            above=horizon_stats(at_primary(s) for s in scores if s.signal.confidence >= t),
        )
        for t in THRESHOLDS
    ]
    comparison = compare_buckets(by_conf, prim, min_samples)
    return SignalScoring(
        horizons=labels,
        primary=prim,
        signals=len(scores),
        scored=sum(1 for s in scores if s.returns.get(prim) is not None),
        independent=len(ind[prim]),
        overall=_group("all", scores, labels, ind),
        by_confidence=by_conf,
        by_action=_groups(scores, lambda s: s.signal.action.value, labels, ["buy", "sell"], ind),
        by_symbol=_groups(scores, lambda s: s.signal.symbol, labels, None, ind),
        by_disposition=_groups(
            scores,
            lambda s: s.disposition,
            labels,
            [TAKEN, REFUSED, NOT_PROPOSED, REJECTED, EXPIRED, FAILED, OPEN],
            ind,
        ),
        thresholds=thresholds,
        bands=confidence_bands(scores, prim, ind[prim]),
        overrides=overrides(scores, prim),
        calibration=calibration_sentence(comparison, prim, min_samples),
        calibration_test=comparison,
    )


class TrackRecord(ReportModel):
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
