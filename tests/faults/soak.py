"""Broker and model faults during a long run: Perun keeps going and every fault is visible.

One headless Perun (paper mode against the loopback Alpaca server, the restless trader on
the loopback Ollama server) runs while faults are injected one at a time (see
``inject.py`` for the names):

* broker: ``504_after_create`` / ``500_after_create`` / ``drop_after_create`` /
  ``hang_after_create`` / ``drop_before_create`` / ``429`` / ``503`` on an order
  submission, a 4-second 429 storm on every endpoint, ``500`` / ``drop`` / ``hang`` /
  ``garbage`` on the account, positions, clock and market-data endpoints;
* model: HTTP 500, an error line mid-stream, a dropped connection, non-JSON text, a reply
  outside the schema, a truncated reply, a server that stops answering.

For each injection the harness first confirms the fault *fired* (a request met it — a
fault on a path nobody asked for proves nothing; counted as ``unfired``), then waits for
the message a user would see for *that* fault (:data:`EVIDENCE`: an order marked
unknown-outcome for a submission that may have gone through, "rate limit" for a 429,
the endpoint's name for a failing endpoint, the analysis error or the repair notice for
a model fault), then for the daemon to finish a clean cycle again. At the end the broker
is quiesced, Perun restarted once, and the crash-safety invariants checked (duplicates
here are broker orders per client order id or per signal: re-sending an id the broker
never received is the designed recovery).
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.alpaca_server import RequestRecord
from tests.fakes.ollama_server import FakeOllama
from tests.faults.harness import EXIT_BUDGET_S, Line, PaperBackend, Series, Tally
from tests.faults.inject import Injector, wait_fired
from tests.faults.trader import OLLAMA_FAULTS, Trader

SUBMIT_FAULTS = (
    "504_after_create",
    "500_after_create",
    "drop_after_create",
    "hang_after_create",
    "drop_before_create",
    "429",
    "503",
)
PATH_FAULTS = (
    ("/v2/account", "500"),
    ("/v2/account", "drop"),
    ("/v2/account", "hang"),
    ("/v2/positions", "garbage"),
    ("/v2/stocks/*", "500"),
    ("/v2/stocks/*", "drop"),
    ("/v2/clock", "503"),
)
ALL_FAULTS: tuple[str, ...] = (
    *(f"submit:{k}" for k in SUBMIT_FAULTS),
    *(f"path:{p}:{k}" for p, k in PATH_FAULTS),
    "storm:429",
    *(f"ollama:{k}" for k in OLLAMA_FAULTS),
)

# --------------------------------------------------------------------------- evidence

Test = Callable[[dict[str, Any]], bool]


def _said(*patterns: str) -> Test:
    """A warning/error log line, an ErrorRaised or a failed analysis whose text matches
    every one of ``patterns`` (case-insensitive) — what the log panel, the errors screen
    and the headless output show."""
    rxs = [re.compile(p, re.IGNORECASE) for p in patterns]

    def test(event: dict[str, Any]) -> bool:
        kind = event.get("event")
        if kind == "LogEvent" and event.get("level") in ("warning", "error"):
            text = str(event.get("message"))
        elif kind == "ErrorRaised":
            text = f"{event.get('where')} {event.get('message')}"
        elif kind == "AnalysisFinished" and event.get("error"):
            text = str(event.get("error"))
        else:
            return False
        return all(rx.search(text) for rx in rxs)

    return test


def _repaired(event: dict[str, Any]) -> bool:
    """An invalid model reply, re-asked once: said in the reasoning panel."""
    return event.get("event") == "ReasoningDelta" and "reply invalid" in str(event.get("text"))


def _either(*tests: Test) -> Test:
    return lambda event: any(t(event) for t in tests)


#: how each broker fault reads in Perun's messages
FAILURE_TEXT = {
    "429": r"rate limit",
    "500": r"internal server error|HTTP 500",
    "503": r"HTTP 503",
    "drop": r"dropped",
    "hang": r"no answer",
    "garbage": r"could not be read",
}
#: which operation a path fault hits, as Perun names it
OPERATION = {
    "/v2/account": r"\baccount: ",
    "/v2/positions": r"\bpositions: ",
    "/v2/clock": r"\bclock: ",
    "/v2/stocks/*": r"\b(latest|history|bars): ",
}
#: per model fault, the message the user sees (an invalid reply is re-asked once, and
#: the reasoning panel says so)
MODEL_TEXT: dict[str, Test] = {
    "http_500": _said(r"HTTP 500"),
    "stream_error": _said(r"stopped mid-reply"),
    "disconnect": _said(r"dropped mid-reply"),
    "hang": _said(r"did not answer within"),
    "garbage": _either(_repaired, _said(r"invalid")),
    "out_of_schema": _either(_repaired, _said(r"invalid")),
    "truncated": _either(_repaired, _said(r"invalid|cut")),
}
#: a submission that may have reached the broker: what it is, by the fake's fault kind
MAY_HAVE_REACHED = frozenset({
    "504_after_create", "500_after_create", "drop_after_create", "hang_after_create",
    "drop_before_create", "500", "502", "503", "504", "drop", "hang",
})


def evidence_for(fault: str, hit: RequestRecord | None) -> Test:
    """What the user must be shown for ``fault`` — tied to the fault's own kind, and for an
    order submission to the very order it hit (``hit``: the request the fault met)."""
    kind, _, rest = fault.partition(":")
    if kind == "ollama":
        return MODEL_TEXT[rest]
    if kind == "storm":
        return _said(FAILURE_TEXT[rest])
    if kind == "path":
        path, _, what = rest.rpartition(":")
        return _said(OPERATION[path], FAILURE_TEXT[what])
    if kind == "submit":
        cid = str(((hit.json if hit else None) or {}).get("client_order_id"))
        if rest in MAY_HAVE_REACHED:
            # marked unknown-outcome (on disk and on screen), and said: being looked up
            def unknown(event: dict[str, Any]) -> bool:
                order = event.get("order") or {}
                return event.get("event") == "OrderChanged" and (
                    order.get("client_order_id") == cid and order.get("status") == "unknown"
                )

            return _either(unknown, _said(re.escape(cid), r"outcome unknown"))
        return _said(re.escape(cid), FAILURE_TEXT.get(rest, rest))
    raise ValueError(f"no evidence rule for {fault!r}")


def _clean_cycle(event: dict[str, Any]) -> bool:
    if event.get("event") != "CycleFinished":
        return False
    report = event.get("report") or {}
    return not report.get("errors") and not report.get("skipped")


# --------------------------------------------------------------------------- the soak


@dataclass
class SoakResult:
    tally: Tally
    injected: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    visible: Counter[str] = field(default_factory=Counter)
    recovered: Counter[str] = field(default_factory=Counter)
    unfired: list[str] = field(default_factory=list)
    invisible: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "faults_injected": sum(self.injected.values()),
            "faults_fired": sum(self.fired.values()),
            "faults_visible": sum(self.visible.values()),
            "faults_recovered": sum(self.recovered.values()),
            "unfired": self.unfired[:10],
            "invisible": self.invisible[:10],
            "stuck": self.stuck[:10],
            "seconds": round(self.seconds, 1),
        }


class Soak:
    def __init__(
        self,
        workdir: Path,
        *,
        seed: int,
        faults: tuple[str, ...] = ALL_FAULTS,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.faults = faults
        self.log = log or (lambda _msg: None)
        self.workdir = workdir
        self.backend = PaperBackend(seed, timeout_s=2.0)
        self.ollama = FakeOllama(default_reply=Trader(seed)).start()
        self.injector = Injector(self.backend.fake, self.ollama)
        self.series = Series(
            self.backend,
            self.ollama,
            workdir,
            seed=seed,
            every="200ms",
            extra_env={"PERUN_LLM__TIMEOUT_S": "2"},
            strict_submits=False,
            log=log,
        )

    def _one(self, child: Any, fault: str, result: SoakResult) -> None:
        mark = len(child.lines)
        injection = self.injector.inject(fault)
        result.injected[fault] += 1

        def since(lines: list[Line], test: Test) -> bool:
            return any(ln.event is not None and test(ln.event) for ln in lines[mark:])

        if not wait_fired(self.injector, injection, 15):
            result.unfired.append(fault)
            result.tally.soak_unfired += 1
            self.series._problem(f"soak: {fault} never met a request (harness problem)")
        else:
            result.fired[fault] += 1
            evidence = evidence_for(fault, self.injector.hit(injection))
            if child.wait_for(lambda ls: since(ls, evidence), 15):
                result.visible[fault] += 1
            else:
                result.invisible.append(fault)
                result.tally.soak_invisible += 1
                self.series._problem(f"soak: {fault} fired but the user was not told")
        # keeps going: a clean cycle after the fault (a 429 storm lasts STORM_S; failed
        # cycles retry after the broker's Retry-After or 2, 4, 8... s, and at once when
        # the broker answers again)
        if child.wait_for(lambda ls: since(ls, _clean_cycle), 60):
            result.recovered[fault] += 1
        else:
            result.stuck.append(fault)
            result.tally.soak_stuck += 1
            self.series._problem(f"soak: no clean cycle within 60 s after {fault}")
        self.injector.clear()

    def run(self, seconds: float, plan: list[str] | None = None) -> SoakResult:
        """Inject random faults for ``seconds`` — or exactly the faults in ``plan``."""
        result = SoakResult(tally=self.series.tally)
        todo = list(plan) if plan is not None else None
        started = time.monotonic()
        child = self.series.start()
        try:
            if not child.wait_for(lambda ls: any(_clean_cycle(ln.event or {}) for ln in ls), 30):
                result.stuck.append("no clean first cycle")
                result.tally.soak_stuck += 1
                return result
            while child.alive() and (
                todo if todo is not None else time.monotonic() - started < seconds
            ):
                fault = todo.pop(0) if todo is not None else self.rng.choice(self.faults)
                self._one(child, fault, result)
            if not child.alive():
                self.series._crashed(child, "during the soak")
        finally:
            self.injector.clear()
            sent = time.monotonic()
            child.send(signal.SIGTERM)
            rc = child.finish()
            took = time.monotonic() - sent
            result.tally.interrupts += 1
            result.tally.exit_times.append(took)
            result.tally.max_exit_s = max(result.tally.max_exit_s, took)
            if rc != 0 or took > EXIT_BUDGET_S:
                result.tally.slow_exits += 1
                self.series._problem(f"soak SIGTERM: exit code {rc} after {took:.2f}s")
            self.series.check(child, after="the soak", graceful=True)
        self.series.final()
        result.seconds = time.monotonic() - started
        return result

    def close(self) -> None:
        self.ollama.stop()
        self.backend.close()


def run_soak(
    workdir: Path,
    seconds: float,
    *,
    seed: int,
    faults: tuple[str, ...] = ALL_FAULTS,
    plan: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> SoakResult:
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(workdir, seed=seed, faults=faults, log=log)
    try:
        return soak.run(seconds, plan)
    finally:
        soak.close()


def evidence_after(lines: list[Line], mark: int) -> list[str]:
    """The user-visible trouble printed since ``mark`` (for diagnosing an invisible fault)."""
    out = []
    for ln in lines[mark:]:
        e = ln.event or {}
        if e.get("event") in ("LogEvent", "ErrorRaised", "AnalysisFinished", "OrderChanged"):
            out.append(json.dumps(e)[:300])
    return out
