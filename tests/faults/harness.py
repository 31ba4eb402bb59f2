"""The crash-safety harness: kill a headless `perun` anywhere, restart it, check nothing broke.

One :class:`Series` drives one storage directory against one broker:

* ``sim`` — the built-in simulated exchange, whose state lives in Perun's own database;
* ``paper`` — the loopback Alpaca server (``tests/fakes/alpaca_server.py``) running in
  this process, which outlives every killed Perun exactly as Alpaca would.

The analyst is the loopback Ollama server answering as a restless :class:`Trader`, with
``approval.mode = "threshold"``: confident signals are submitted at once, the others wait
as pending (with a long TTL), so every kill has orders in flight and approvals waiting.

Each step starts ``perun run --headless --json --every 100ms`` (through
``tests.faults.child``), waits for a random moment — a random time, or just after the
k-th signal/order/cycle event it printed — and then either ``kill -9``s it or sends it
SIGTERM/SIGHUP/SIGINT (which must end it, exit code 0, within 5 s). After every step and
after a final clean run the invariants are checked:

``duplicates``
    a client order id submitted more than once, more than one broker order for a client
    order id, or for one signal;
``unknown_broker_orders``
    a broker order whose client order id has no row in Perun's database (the intent is
    committed *before* the broker call, so even straight after ``kill -9`` there is one);
``lost_signals``
    a signal that was pending/approved — in the database at a check point, or as printed
    by the killed process — that is later missing, back-dated, or without the recorded
    transition out of that state;
``integrity_failures``
    ``PRAGMA integrity_check`` not ``ok`` on the database the killed process left;
``position_mismatches`` (final)
    per symbol, the broker's position ≠ the net filled quantity of Perun's orders.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.alpaca_server import FakeAlpaca
from tests.fakes.ollama_server import FakeOllama
from tests.faults.child import CRASH_ENV, CRASH_EXIT, CRASH_POINTS, JOURNAL_ENV
from tests.faults.trader import Trader
from tests.sim import SIM_START

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("AAPL", "MSFT", "NVDA", "SPY", "AMZN", "GOOGL")
KEY_ID = "PKFAULTS00000000TEST"
SECRET = "faults-secret-0000000000000000000000000"
EXIT_BUDGET_S = 5.0
OPEN_SIGNAL_STATES = ("pending", "approved")
FINAL_ORDER_STATES = ("filled", "canceled", "expired", "rejected", "failed")
INTERRUPTS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


# --------------------------------------------------------------------------- results


#: the counters that must stay 0: the headline names every one, so a failure can't hide
FAILURE_COUNTERS = (
    "duplicates",
    "lost_signals",
    "unknown_broker_orders",
    "integrity_failures",
    "position_mismatches",
    "unrecorded_events",
    "fill_gaps",
    "slow_exits",
    "crashes",
    "soak_invisible",
    "soak_stuck",
    "soak_unfired",
)


@dataclass
class Tally:
    """What a run found; every counter in FAILURE_COUNTERS must stay 0."""

    kills: int = 0  # kill -9s and crash hooks after which there was a database to check
    interrupts: int = 0
    duplicates: int = 0
    lost_signals: int = 0
    unknown_broker_orders: int = 0
    integrity_failures: int = 0
    position_mismatches: int = 0
    unrecorded_events: int = 0  # printed by a process but not in its database
    fill_gaps: int = 0  # orders whose stored fills do not add up to their filled qty
    slow_exits: int = 0  # a signal not ending the process, code 0, within EXIT_BUDGET_S
    crashes: int = 0  # a process that ended by itself when it should have kept running
    soak_invisible: int = 0  # an injected fault that fired but the user was not told
    soak_stuck: int = 0  # no clean cycle after a fault
    soak_unfired: int = 0  # an injected fault that never hit a request (a harness bug)
    max_exit_s: float = 0.0
    exit_times: list[float] = field(default_factory=list)
    cycles: int = 0
    orders: int = 0  # broker orders at the end
    fills: int = 0
    signals: int = 0
    pending_checked: int = 0  # pending/approved signals carried across a kill and checked
    kill_points: Counter[str] = field(default_factory=Counter)
    crash_points: Counter[str] = field(default_factory=Counter)  # crash hooks that fired
    problems: list[str] = field(default_factory=list)

    _SUMMED = (
        "kills", "interrupts", *FAILURE_COUNTERS, "cycles", "orders", "fills", "signals",
        "pending_checked",
    )

    def add(self, other: Tally) -> None:
        for name in self._SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_exit_s = max(self.max_exit_s, other.max_exit_s)
        self.exit_times.extend(other.exit_times)
        self.kill_points.update(other.kill_points)
        self.crash_points.update(other.crash_points)
        self.problems.extend(other.problems)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in FAILURE_COUNTERS)

    def headline(self) -> dict[str, Any]:
        """The last line of ``python -m tests.faults``: the issue's four figures first, then
        every other failure counter, then ``ok`` — nothing that failed reads as 0."""
        return {
            "bench": "faults",
            "kills": self.kills,
            **{name: getattr(self, name) for name in FAILURE_COUNTERS},
            "ok": self.ok,
        }

    def details(self) -> dict[str, Any]:
        times = sorted(self.exit_times)
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)] if times else 0.0
        return {
            **self.headline(),
            "interrupts": self.interrupts,
            "exit_s_p95": round(p95, 2),
            "exit_s_max": round(self.max_exit_s, 2),
            "cycles": self.cycles,
            "signals": self.signals,
            "pending_checked": self.pending_checked,
            "broker_orders": self.orders,
            "fills": self.fills,
            "kill_points": dict(sorted(self.kill_points.items())),
            "crash_points": dict(sorted(self.crash_points.items())),
            "problems": self.problems[:20],
        }


# --------------------------------------------------------------------------- a child


@dataclass
class Line:
    t: float  # time.monotonic() when the harness read it
    raw: str
    event: dict[str, Any] | None
    wall: float = 0.0  # time.time() when the harness read it


class Child:
    """One headless Perun process, its output read line by line with arrival times."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.child", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.lines: list[Line] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            event: dict[str, Any] | None = None
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(text)
            with self._cond:
                self.lines.append(Line(time.monotonic(), text, event, time.time()))
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                ln.event for ln in self.lines
                if ln.event is not None and (kind is None or ln.event.get("event") == kind)
            ]

    def wait_for(self, predicate: Callable[[list[Line]], bool], timeout: float) -> bool:
        """Until ``predicate(lines)`` holds, the process ends, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return predicate(self.lines)
                self._cond.wait(min(left, 0.05))
            return True

    def wait_events(self, kind: str, count: int, timeout: float) -> bool:
        def enough(lines: list[Line]) -> bool:
            return sum(1 for ln in lines if ln.event and ln.event.get("event") == kind) >= count

        return self.wait_for(enough, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the exit (SIGKILL after ``timeout``) and the end of its output."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            rc = self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        return rc

    def output(self) -> str:
        with self._cond:
            return "\n".join(ln.raw for ln in self.lines)


# --------------------------------------------------------------------------- database


def read_db(path: Path) -> dict[str, Any]:
    """What Perun's database holds, read with plain sqlite3 (no Perun code involved)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        integrity = "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        signals = {
            sid: status
            for sid, status in conn.execute("SELECT id, status FROM signals")
        }
        transitions: dict[str, list[tuple[str | None, str, str]]] = {}
        for sid, old, new, at in conn.execute(
            "SELECT signal_id, old, new, at FROM signal_transitions ORDER BY id"
        ):
            transitions.setdefault(sid, []).append((old, new, at))
        orders = {
            cid: {
                "signal_id": sig, "status": status, "side": side, "symbol": sym,
                "filled_qty": filled or 0.0, "external": bool(ext),
            }
            for cid, sig, status, side, sym, filled, ext in conn.execute(
                "SELECT client_order_id, signal_id, status, side, symbol, filled_qty, external "
                "FROM orders"
            )
        }
        fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        filled = dict(
            conn.execute("SELECT client_order_id, SUM(qty) FROM fills GROUP BY client_order_id")
        )
        cycles = conn.execute("SELECT COUNT(*) FROM cycles").fetchone()[0]
        state = dict(conn.execute("SELECT key, value FROM state").fetchall())
        # the sim exchange's orders, one row each (schema version 2 on)
        has_sim = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sim_orders'"
        ).fetchone()
        sim_orders = (
            [json.loads(d) for (d,) in conn.execute("SELECT data FROM sim_orders")]
            if has_sim else []
        )
    finally:
        conn.close()
    return {
        "integrity": integrity,
        "signals": signals,
        "transitions": transitions,
        "orders": orders,
        "fills": fills,
        "filled_by_order": filled,
        "cycles": cycles,
        "state": state,
        "sim_orders": sim_orders,
    }


# --------------------------------------------------------------------------- brokers


class Backend:
    """The broker side of a series: how to point Perun at it and how to read its truth."""

    mode = ""

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def orders(self, db: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Broker orders grouped by client order id (more than one is a duplicate)."""
        raise NotImplementedError

    def positions(self, db: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def submissions(self) -> Counter[str]:
        """How many times each client order id was sent to the broker."""
        raise NotImplementedError

    def submit_times(self) -> list[tuple[float, str]]:
        """(unix time, client order id) of every submission attempt."""
        raise NotImplementedError

    def quiesce(self) -> None:
        """Let every open order reach a final state before the final check."""

    def close(self) -> None:
        pass


class SimBackend(Backend):
    mode = "sim"

    def __init__(self, workdir: Path, *, order_type: str = "market") -> None:
        self.journal = workdir / "sim-submits.log"
        self.journal.touch()
        self.order_type = order_type

    def env(self) -> dict[str, str]:
        return {JOURNAL_ENV: str(self.journal), "PERUN_TRADING__ORDER_TYPE": self.order_type}

    def _sim_state(self, db: dict[str, Any]) -> dict[str, Any]:
        text = db["state"].get("sim_state")
        return json.loads(text) if text else {}

    def orders(self, db: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for item in db["sim_orders"]:
            order = item["order"]
            out.setdefault(order["client_order_id"], []).append(order)
        return out

    def positions(self, db: dict[str, Any]) -> dict[str, float]:
        held = self._sim_state(db).get("positions", {})
        return {sym: float(p["qty"]) for sym, p in held.items()}

    def submit_times(self) -> list[tuple[float, str]]:
        out = []
        for line in self.journal.read_text().splitlines():
            t, _, cid = line.partition(" ")
            if cid:
                out.append((float(t), cid))
        return out

    def submissions(self) -> Counter[str]:
        return Counter(cid for _, cid in self.submit_times())


class PaperBackend(Backend):
    """The loopback Alpaca server in this process, prices walking in a thread."""

    mode = "paper"

    def __init__(
        self,
        seed: int,
        *,
        fill_delay: float | None = 0.3,
        partial_fills: bool = True,
        key_id: str = KEY_ID,
        secret: str = SECRET,
        timeout_s: float | None = 3.0,  # alpaca.request_timeout_s; None: Perun's default
    ) -> None:
        rng = random.Random(seed)
        self.fake = FakeAlpaca(
            key_id,
            secret,
            prices={s: round(rng.uniform(50, 600), 2) for s in SYMBOLS},
            fill_delay=fill_delay,
            partial_fills=partial_fills,
        ).start()
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._walk_rng = random.Random(seed + 1)
        self._walker = threading.Thread(target=self._walk, daemon=True)
        self._walker.start()

    def _walk(self) -> None:
        while not self._stop.wait(0.5):
            for sym in SYMBOLS:
                price = self.fake.price(sym)
                if price:
                    step = math.exp(self._walk_rng.gauss(0, 0.001))
                    self.fake.set_price(sym, round(price * step, 2))

    def env(self) -> dict[str, str]:
        f = self.fake
        env = {
            "PERUN_ALPACA__TRADING_URL": f.trading_url,
            "PERUN_ALPACA__DATA_URL": f.data_url,
            "PERUN_ALPACA__STREAM_URL": f.stream_url,
            "PERUN_ALPACA__MAX_REQUESTS_PER_MINUTE": "10000",
            "APCA_API_KEY_ID": f.key_id,
            "APCA_API_SECRET_KEY": f.secret,
        }
        if self.timeout_s is not None:
            env["PERUN_ALPACA__REQUEST_TIMEOUT_S"] = f"{self.timeout_s:g}"
        return env

    def orders(self, db: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return self.fake.orders_by_client_id()

    def positions(self, db: dict[str, Any]) -> dict[str, float]:
        return self.fake.positions()

    def submissions(self) -> Counter[str]:
        with self.fake.lock:
            return Counter(self.fake.submit_attempts)

    def submit_times(self) -> list[tuple[float, str]]:
        return [
            (r.time, str((r.json or {}).get("client_order_id")))
            for r in self.fake.requests("POST", "/v2/orders")
        ]

    def quiesce(self) -> None:
        self.fake.faults.clear()
        self.fake.fill_delay = 0.0
        deadline = time.monotonic() + 5
        while self.fake.fill_pending() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self.fake.stop()


# --------------------------------------------------------------------------- a series


def base_env(storage: Path, ollama_url: str) -> dict[str, str]:
    """The environment of every child: isolated dirs, a restless analyst, fast cycles."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERUN_", "APCA_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
            "XDG_CONFIG_HOME": str(storage / "config"),
            "XDG_DATA_HOME": str(storage / "xdg-data"),
            "PERUN_STORAGE__PATH": str(storage / "data"),
            "PERUN_SIM__START": SIM_START,
            "PERUN_TRADING__SYMBOLS": ",".join(SYMBOLS),
            "PERUN_TRADING__HISTORY_BARS": "30",
            "PERUN_LLM__PROVIDER": "ollama",
            "PERUN_LLM__HOST": ollama_url,
            "PERUN_LLM__TIMEOUT_S": "3",
            "PERUN_LLM__FALLBACK": "rules",
            "PERUN_APPROVAL__MODE": "threshold",
            "PERUN_APPROVAL__AUTO_MIN_CONFIDENCE": "0.75",
            "PERUN_APPROVAL__TTL_MINUTES": "1440",
            "PERUN_APPROVAL__MAX_DRIFT_PCT": "50",
            "PERUN_RISK__COOLDOWN_MINUTES": "0",
            "PERUN_RISK__MAX_ORDER_NOTIONAL": "1500",
            "PERUN_RISK__MAX_POSITION_PCT": "20",
            "PERUN_RISK__MAX_OPEN_POSITIONS": "20",
            "PERUN_RISK__DAILY_LOSS_LIMIT_PCT": "100",
            "PERUN_NOTIFY__BELL": "false",
        }
    )
    return env


@dataclass
class Watched:
    status: str
    history: list[tuple[str | None, str, str]]


class Series:
    """Kill/interrupt one Perun over and over against one broker and storage directory."""

    def __init__(
        self,
        backend: Backend,
        ollama: FakeOllama,
        workdir: Path,
        *,
        seed: int,
        every: str = "100ms",
        extra_env: dict[str, str] | None = None,
        strict_submits: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.every = every
        self.env = base_env(workdir, ollama.url)
        self.env.update(backend.env())
        self.env.update(extra_env or {})
        self.db_path = workdir / "data" / f"perun-{backend.mode}.db"
        self.strict_submits = strict_submits
        self.tally = Tally()
        self.watch: dict[str, Watched] = {}
        self.log = log or (lambda _msg: None)
        (workdir / "config").mkdir(parents=True, exist_ok=True)

    # -- running

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Child:
        args = ["run", "--headless", "--json", "--every", self.every, "--mode",
                self.backend.mode, *extra]
        return Child(args, {**self.env, **(env or {})}, self.workdir)

    def _wait_moment(self, child: Child, *, signal_safe: bool = False) -> str:
        """Wait for a random moment of a random kind; returns its name.

        ``signal_safe``: a start-up moment is taken after Perun printed its first line.
        Before that the interpreter is still importing and a signal has its default
        effect (nothing has been written yet). For ``kill -9`` a start-up moment is taken
        once the database exists (migrations, reconciliation, the first cycle): before
        that there is nothing a kill could break, or the harness could check.
        """
        kind = self.rng.choices(
            ["startup", "time", "signal", "order", "cycle", "fill"],
            weights=[1, 3, 3, 4, 2, 1],
        )[0]
        if kind == "startup":
            if signal_safe:
                child.wait_for(lambda lines: bool(lines), 15)
            else:
                deadline = time.monotonic() + 15
                while not self.db_path.exists() and child.alive():
                    if time.monotonic() > deadline:
                        return "startup-no-db"
                    time.sleep(0.005)
            time.sleep(self.rng.uniform(0.0, 0.8))
            return kind
        if not child.wait_events("CycleStarted", 1, 15):
            return "no-cycle"
        if kind == "time":
            time.sleep(self.rng.uniform(0.0, 2.5))
            return kind
        event, jitter = {
            "signal": ("SignalChanged", 0.01),
            "order": ("OrderChanged", 0.02),
            "cycle": ("CycleStarted", 0.15),
            "fill": ("FillReceived", 0.02),
        }[kind]
        have = len(child.events(event))
        count = have + self.rng.randint(1, 4)
        if not child.wait_events(event, count, 8):
            return f"{kind}-timeout"
        time.sleep(self.rng.uniform(0.0, jitter))
        return kind

    def kill_once(self) -> bool:
        """One ``kill -9`` at a random moment; False when there was nothing to check."""
        child = self.start()
        point = self._wait_moment(child)
        if not child.alive():
            self._crashed(child, "before the kill")
        child.send(signal.SIGKILL)
        child.finish()
        if not self.check(child, after="kill -9 at " + point):
            self.tally.kill_points["not-checked"] += 1
            return False
        self.tally.kills += 1
        self.tally.kill_points[point] += 1
        return True

    def crash_once(self, point: str) -> bool:
        """Let the process end itself at a named crash point (see ``child.py``): the n-th
        order intent, broker acceptance or stored fill of this run. False when the run
        never got there (it is then killed, and nothing is counted)."""
        nth = self.rng.randint(1, 3)
        child = self.start(env={CRASH_ENV: f"{point}:{nth}"})
        try:
            rc: int | None = child.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is None:
            child.send(signal.SIGKILL)
            child.finish()
            self.tally.kill_points[f"hook-missed:{point}"] += 1
            self._log_note(f"crash point {point} #{nth} not reached in 30 s")
            self.check(child, after=f"kill -9 (crash point {point} not reached)")
            return False
        child.finish()
        if rc != CRASH_EXIT:
            self._crashed(child, f"before crash point {point}")
            return False
        checked = self.check(child, after=f"crash at {point} #{nth}")
        if checked:
            self.tally.kills += 1
            self.tally.crash_points[point] += 1
            self.tally.kill_points[f"hook:{point}"] += 1
        return checked

    def _log_note(self, text: str) -> None:
        self.log(f"[{self.backend.mode}] {text}")

    def interrupt_once(self) -> None:
        child = self.start()
        point = self._wait_moment(child, signal_safe=True)
        if not child.alive():
            self._crashed(child, "before the signal")
        sig = self.rng.choice(INTERRUPTS)
        sent = time.monotonic()
        child.send(sig)
        try:
            rc: int | None = child.proc.wait(EXIT_BUDGET_S + 10)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - sent
        rc = child.finish() if rc is None else rc
        self.tally.interrupts += 1
        self.tally.kill_points[f"{signal.Signals(sig).name}@{point}"] += 1
        self.tally.exit_times.append(took)
        self.tally.max_exit_s = max(self.tally.max_exit_s, took)
        if rc != 0 or took > EXIT_BUDGET_S:
            self.tally.slow_exits += 1
            self._problem(
                f"{signal.Signals(sig).name} at {point}: exit code {rc} after {took:.2f}s "
                f"(stderr: {' | '.join(child.stderr[-3:])})"
            )
        self.check(child, after=f"{signal.Signals(sig).name} at {point}", graceful=True)

    def final(self) -> None:
        """Quiesce the broker, run once more without new orders, check everything."""
        self.backend.quiesce()
        child = self.start("--cycles", "2", env={"PERUN_APPROVAL__MODE": "manual"})
        rc = child.finish(60)
        if rc != 0:
            self.tally.crashes += 1
            self._problem(f"final run exit code {rc}: {' | '.join(child.stderr[-5:])}")
        self.check(child, after="final run", final=True)

    def _crashed(self, child: Child, when: str) -> None:
        rc = child.proc.poll()
        self.tally.crashes += 1
        self._problem(
            f"perun exited by itself {when} (code {rc}): {' | '.join(child.stderr[-5:])}"
        )

    def _problem(self, text: str) -> None:
        self.tally.problems.append(f"[{self.backend.mode}] {text}")
        self.log(f"PROBLEM [{self.backend.mode}] {text}")

    # -- checking

    def check(
        self, child: Child, *, after: str, graceful: bool = False, final: bool = False
    ) -> bool:
        """Check every invariant; False when there is no database yet to check."""
        if not self.db_path.exists():
            return False
        db = read_db(self.db_path)
        t = self.tally
        if db["integrity"] != "ok":
            t.integrity_failures += 1
            self._problem(f"integrity_check after {after}: {db['integrity'][:200]}")

        # what the process printed must be what its database holds (commit, then publish)
        for event in child.events("SignalChanged"):
            sid = event["signal"]["id"]
            tr = event["transition"]
            history = db["transitions"].get(sid, [])
            if not any(new == tr["new"] and old == tr["old"] for old, new, _ in history):
                if tr["new"] in OPEN_SIGNAL_STATES:
                    t.lost_signals += 1
                else:
                    t.unrecorded_events += 1
                self._problem(f"after {after}: printed {sid} → {tr['new']} is not in the db")
        for event in child.events("OrderChanged"):
            cid = event["order"]["client_order_id"]
            if cid not in db["orders"]:
                t.unrecorded_events += 1
                self._problem(f"after {after}: printed order {cid} has no row in the db")

        # pending/approved signals seen at earlier check points are still there, with
        # their history intact, either in the same state or moved on
        for sid, seen in self.watch.items():
            history = db["transitions"].get(sid, [])
            status = db["signals"].get(sid)
            if status is None or history[: len(seen.history)] != seen.history:
                t.lost_signals += 1
                self._problem(f"after {after}: {seen.status} signal {sid} lost or rewritten")
            elif status == seen.status and len(history) != len(seen.history):
                t.lost_signals += 1
                self._problem(f"after {after}: {sid} history changed but status did not")
            elif status != seen.status and len(history) <= len(seen.history):
                t.lost_signals += 1
                self._problem(f"after {after}: {sid} left {seen.status} with no transition")
        self.tally.pending_checked += len(self.watch)
        self.watch = {
            sid: Watched(status, list(db["transitions"].get(sid, [])))
            for sid, status in db["signals"].items()
            if status in OPEN_SIGNAL_STATES
        }

        # broker side
        broker_orders = self.backend.orders(db)
        for cid, orders in broker_orders.items():
            if len(orders) > 1:
                t.duplicates += len(orders) - 1
                self._problem(f"after {after}: {len(orders)} broker orders for {cid}")
            if cid not in db["orders"]:
                t.unknown_broker_orders += 1
                self._problem(f"after {after}: broker order {cid} unknown locally")
        per_signal = Counter(
            db["orders"][cid]["signal_id"] for cid in broker_orders
            if cid in db["orders"] and db["orders"][cid]["signal_id"]
        )
        for sid, n in per_signal.items():
            if n > 1:
                t.duplicates += n - 1
                self._problem(f"after {after}: {n} broker orders for signal {sid}")
        if self.strict_submits:
            for cid, n in self.backend.submissions().items():
                if n > 1:
                    t.duplicates += n - 1
                    self._problem(f"after {after}: {cid} submitted {n} times")
                    self.strict_submits = False  # count each offender once
        if graceful:
            # an order call in flight at the signal finished, or was marked unknown:
            # nothing the broker has may be left as a bare intent after a clean exit
            for cid, row in db["orders"].items():
                if row["status"] == "intent" and cid in broker_orders:
                    t.unrecorded_events += 1
                    self._problem(f"after {after}: {cid} is at the broker but left as intent")
        if final:
            self._final_checks(db, broker_orders, after)
        return True

    def _final_checks(
        self, db: dict[str, Any], broker_orders: dict[str, list[dict[str, Any]]], after: str
    ) -> None:
        t = self.tally
        net: dict[str, float] = {}
        for row in db["orders"].values():
            qty = float(row["filled_qty"] or 0.0)
            net[row["symbol"]] = net.get(row["symbol"], 0.0) + (
                qty if row["side"] == "buy" else -qty
            )
        broker = self.backend.positions(db)
        for sym in sorted(set(net) | set(broker)):
            mine, theirs = net.get(sym, 0.0), broker.get(sym, 0.0)
            if abs(mine - theirs) > 1e-6:
                t.position_mismatches += 1
                self._problem(f"after {after}: {sym} broker {theirs:g} vs local {mine:g}")
        for cid, row in db["orders"].items():
            stored = float(db["filled_by_order"].get(cid) or 0.0)
            if abs(stored - float(row["filled_qty"] or 0.0)) > 1e-6:
                t.fill_gaps += 1
                self._problem(
                    f"after {after}: {cid} filled {row['filled_qty']:g}, fills stored {stored:g}"
                )
        stuck = [
            cid for cid, row in db["orders"].items()
            if row["status"] in ("intent", "unknown")
        ]
        if stuck:
            t.unrecorded_events += len(stuck)
            self._problem(f"after {after}: orders still unresolved: {stuck[:5]}")
        t.cycles += db["cycles"]
        t.orders += len(broker_orders)
        t.fills += db["fills"]
        t.signals += len(db["signals"])

    # -- the whole series

    def run(self, kills: int, interrupts: int, crashes_per_point: int = 0) -> Tally:
        """``kills`` kill -9s at random moments, ``interrupts`` signals, and
        ``crashes_per_point`` crashes at each named crash point, shuffled; a kill or crash
        that left nothing to check is tried again (a few times at most)."""
        steps = (
            ["kill"] * kills + ["interrupt"] * interrupts
            + [f"crash:{p}" for p in CRASH_POINTS for _ in range(crashes_per_point)]
        )
        self.rng.shuffle(steps)
        retries = len(steps)
        i = 0
        while steps:
            step = steps.pop()
            if step == "kill":
                done = self.kill_once()
            elif step == "interrupt":
                self.interrupt_once()
                done = True
            else:
                done = self.crash_once(step.partition(":")[2])
            if not done and retries > 0:
                retries -= 1
                steps.insert(self.rng.randint(0, len(steps)), step)
                continue
            i += 1
            if i % 10 == 0 or not steps:
                self.log(
                    f"[{self.backend.mode}] {i} steps: {self.tally.kills} kills "
                    f"({sum(self.tally.crash_points.values())} at crash points), "
                    f"{self.tally.interrupts} interrupts, problems {len(self.tally.problems)}"
                )
        self.final()
        return self.tally


@contextlib.contextmanager
def trader_ollama(seed: int) -> Iterator[FakeOllama]:
    """The loopback Ollama server answering as a restless trader."""
    srv = FakeOllama(default_reply=Trader(seed))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def run_series(
    mode: str,
    workdir: Path,
    *,
    kills: int,
    interrupts: int,
    seed: int,
    crashes_per_point: int = 0,
    log: Callable[[str], None] | None = None,
) -> Tally:
    """One complete kill/interrupt series against ``mode`` (``sim`` or ``paper``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    backend: Backend
    if mode == "sim":
        backend = SimBackend(workdir)
    elif mode == "paper":
        backend = PaperBackend(seed)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    try:
        with trader_ollama(seed) as ollama:
            series = Series(backend, ollama, workdir, seed=seed, log=log)
            return series.run(kills, interrupts, crashes_per_point)
    finally:
        backend.close()
