"""Named faults for the loopback Alpaca and Ollama servers, and proof that they fired.

A fault is named ``<kind>:<what>``:

* ``submit:<kind>`` — the next ``POST /v2/orders`` (``504_after_create``, ``429``...);
* ``path:<pattern>:<kind>`` — the next requests whose path matches the fnmatch pattern;
* ``storm:429`` — every request answered 429 for ``STORM_S`` seconds (a time, not a
  count: a client that backs off would otherwise stretch a counted storm for minutes);
* ``stream:drop`` — every order-update stream connection dropped;
* ``ollama:<kind>`` — the next model call fails (see ``trader.ollama_fault``).

:meth:`Injector.inject` returns an :class:`Injection`; :meth:`Injector.fired` says whether
a request actually met it — a fault on a path nobody asked for proves nothing.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass

from tests.fakes.alpaca_server import FakeAlpaca, PathFault, RequestRecord
from tests.fakes.ollama_server import FakeOllama
from tests.faults.trader import ollama_fault

STORM_S = 4.0


@dataclass
class Injection:
    fault: str
    kind: str  # the fault kind the server records on the requests it hit
    method: str  # "POST", "GET" or "*"
    path: str  # fnmatch pattern ("" for model faults and stream drops)
    mark: int  # the server's request count when it was injected
    dropped: int = 0  # stream connections dropped (stream:drop)


class Injector:
    """Injects named faults into a FakeAlpaca (and a FakeOllama, when given)."""

    def __init__(self, fake: FakeAlpaca, ollama: FakeOllama | None = None) -> None:
        self.fake = fake
        self.ollama = ollama
        self._timers: list[threading.Timer] = []

    def inject(self, fault: str, *, count: int = 2, method: str = "GET") -> Injection:
        """Inject ``fault``; ``count`` and ``method`` apply to ``path:`` faults."""
        fake = self.fake
        kind, _, rest = fault.partition(":")
        mark = len(fake.requests())
        if kind == "submit":
            fake.faults.submit.append(rest)
            return Injection(fault, rest, "POST", "/v2/orders", mark)
        if kind == "path":
            path, _, what = rest.rpartition(":")
            fake.faults.add(path, what, count=count, method=method)
            return Injection(fault, what, method, path, mark)
        if kind == "storm":
            storm = fake.faults.add("*", rest, count=None, method="*")
            timer = threading.Timer(STORM_S, self._end, args=(storm,))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
            return Injection(fault, rest, "*", "*", mark)
        if kind == "stream":
            return Injection(fault, rest, "", "", mark, dropped=fake.drop_streams())
        if kind == "ollama":
            if self.ollama is None:
                raise ValueError(f"{fault}: no Ollama server to inject into")
            self.ollama.script(ollama_fault(rest))
            return Injection(fault, rest, "", "", len(self.ollama.requests))
        raise ValueError(f"unknown fault {fault!r}")

    def _end(self, storm: PathFault) -> None:
        with self.fake.lock:
            if storm in self.fake.faults.paths:
                self.fake.faults.paths.remove(storm)

    def fired(self, injection: Injection) -> bool:
        """Whether a request met the fault (a model fault: its scripted reply was used)."""
        if injection.fault.startswith("ollama:"):
            assert self.ollama is not None
            return self.ollama.pending() == 0 and len(self.ollama.requests) > injection.mark
        if injection.fault.startswith("stream:"):
            return injection.dropped > 0
        return self.hit(injection) is not None

    def hit(self, injection: Injection) -> RequestRecord | None:
        """The first request the fault was served to (None: not yet, or a model fault)."""
        for rec in self.fake.requests()[injection.mark :]:
            if (
                rec.fault == injection.kind
                and (injection.method == "*" or rec.method == injection.method)
                and fnmatch.fnmatchcase(rec.path, injection.path)
            ):
                return rec
        return None

    def clear(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.fake.faults.clear()
        if self.ollama is not None:
            self.ollama.clear_script()


def wait_fired(injector: Injector, injection: Injection, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not injector.fired(injection):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
