"""Broker and model faults during a long run: Perun keeps going and every fault is visible.

One headless Perun (paper mode against the loopback Alpaca server, the restless trader on
the loopback Ollama server) runs while faults are injected one at a time:

* broker: ``504_after_create`` / ``500_after_create`` / ``drop_after_create`` /
  ``hang_after_create`` / ``drop_before_create`` / ``429`` on an order submission,
  a 429 storm on every endpoint, ``500`` / ``drop`` / ``hang`` / ``garbage`` on the
  account, positions and market-data endpoints;
* model: HTTP 500, an error line mid-stream, a dropped connection, non-JSON text, a reply
  outside the schema, a truncated reply, a server that stops answering.

After each injection the harness waits for the fault to show on the bus — an
``ErrorRaised``, a warning/error ``LogEvent``, an analysis that finished with an error,
the "reply invalid — asking once more" notice of a repaired model reply, or an order
marked unknown-outcome — and then for the daemon to finish a clean cycle
again. At the end the broker is quiesced, Perun restarted once, and the crash-safety
invariants checked (duplicates here are broker orders per client order id or per
signal: re-sending an id the broker never received is the designed recovery).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.ollama_server import FakeOllama
from tests.faults.harness import EXIT_BUDGET_S, Line, PaperBackend, Series, Tally
from tests.faults.trader import OLLAMA_FAULTS, Trader, ollama_fault

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


@dataclass
class SoakResult:
    tally: Tally
    injected: Counter[str] = field(default_factory=Counter)
    visible: Counter[str] = field(default_factory=Counter)
    recovered: Counter[str] = field(default_factory=Counter)
    invisible: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "faults_injected": sum(self.injected.values()),
            "faults_visible": sum(self.visible.values()),
            "faults_recovered": sum(self.recovered.values()),
            "invisible": self.invisible[:10],
            "stuck": self.stuck[:10],
            "seconds": round(self.seconds, 1),
        }


def _is_evidence(event: dict[str, Any]) -> bool:
    kind = event.get("event")
    if kind == "ErrorRaised":
        return True
    if kind == "LogEvent":
        return event.get("level") in ("warning", "error")
    if kind == "AnalysisFinished":
        return bool(event.get("error"))
    if kind == "OrderChanged":
        return (event.get("order") or {}).get("status") == "unknown"
    if kind == "AnalystStatus":
        return not event.get("available", True)
    if kind == "ReasoningDelta":  # an invalid reply repaired: said in the reasoning panel
        return "reply invalid" in str(event.get("text"))
    return False


def _clean_cycle(event: dict[str, Any]) -> bool:
    if event.get("event") != "CycleFinished":
        return False
    report = event.get("report") or {}
    return not report.get("errors") and not report.get("skipped")


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

    def _inject(self, fault: str) -> None:
        fake = self.backend.fake
        kind, _, rest = fault.partition(":")
        if kind == "submit":
            fake.faults.submit.append(rest)
        elif kind == "path":
            path, _, what = rest.rpartition(":")
            fake.faults.add(path, what, count=2)
        elif kind == "storm":
            fake.faults.add("*", rest, count=20, method="*")
        elif kind == "ollama":
            self.ollama.script(ollama_fault(rest))
        else:  # pragma: no cover - a typo in the fault list
            raise ValueError(fault)

    def run(self, seconds: float, plan: list[str] | None = None) -> SoakResult:
        """Inject random faults for ``seconds`` — or exactly the faults in ``plan``."""
        result = SoakResult(tally=self.series.tally)
        todo = list(plan) if plan is not None else None
        started = time.monotonic()
        child = self.series.start()
        try:
            if not child.wait_for(lambda ls: any(_clean_cycle(ln.event or {}) for ln in ls), 30):
                result.stuck.append("no clean first cycle")
                return result
            while child.alive() and (
                todo if todo is not None else time.monotonic() - started < seconds
            ):
                fault = todo.pop(0) if todo is not None else self.rng.choice(self.faults)
                mark = len(child.lines)
                self._inject(fault)
                result.injected[fault] += 1

                def since(
                    lines: list[Line], test: Callable[[dict[str, Any]], bool], mark: int = mark
                ) -> bool:
                    return any(ln.event is not None and test(ln.event) for ln in lines[mark:])

                if child.wait_for(lambda ls: since(ls, _is_evidence), 15):
                    result.visible[fault] += 1
                else:
                    result.invisible.append(fault)
                    self.log(f"soak: {fault} left no visible trace")
                # keeps going: a clean cycle after the fault (failed cycles back off
                # exponentially, 2, 4, 8... s, so a storm can take a while to clear)
                if child.wait_for(lambda ls: since(ls, _clean_cycle), 60):
                    result.recovered[fault] += 1
                else:
                    result.stuck.append(fault)
                    self.log(f"soak: no clean cycle after {fault}")
                self.backend.fake.faults.clear()
                self.ollama.clear_script()
            if not child.alive():
                self.series._crashed(child, "during the soak")
        finally:
            sent = time.monotonic()
            child.send(signal.SIGTERM)
            rc = child.finish()
            took = time.monotonic() - sent
            result.tally.interrupts += 1
            result.tally.exit_times.append(took)
            result.tally.max_exit_s = max(result.tally.max_exit_s, took)
            if rc != 0 or took > EXIT_BUDGET_S:
                result.tally.slow_or_failed_exits += 1
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
