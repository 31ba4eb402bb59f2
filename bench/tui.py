"""The terminal, measured the way a user sees it: in a real pseudo-terminal (120×40,
TERM=xterm-256color) whose output is fed to a terminal emulator (pyte).

    python bench/tui.py [--presses 100] [--flood 1050] [--window 8] [--cycles 10000]
                        [--verbose]

About two and a half minutes; a hard stop at 240 s.

1. startup: the real ``perun`` (sim mode, rules analyst, databases in a temp dir), spawned
   ``--starts`` times: the time from spawn until the emulated screen shows the full layout
   (the header, the five panel titles and the footer). Also when the first prices show,
   and how long ``q`` takes to exit (and with which code).
2. idle: ``python -m perun_tui.tui.demo`` (scripted daemon, fixed data, nothing running):
   ``l`` pressed ``--presses`` times, each timed from the write to the pty until the Log
   panel's title shows the next level on the emulated screen (the baseline). After every
   third, ``p`` (pause/resume), timed until the header shows the new state (the
   command's feedback; ``pause_p99_ms`` in the JSON) and until the footer's label flips
   (Textual rebuilds the footer, a layout pass; shown in the table).
3. flood: the same demo with ``--flood RATE`` (≥ 1,000 bus events/s: ticks, log lines,
   reasoning deltas). Over ``--window`` seconds with no keys: the process's CPU share
   (utime+stime from /proc over wall time, % of one core), the bytes it writes to the
   terminal, and the event rate actually achieved (from the "flood N" sequence numbers in
   the Log panel). Then the same key presses as idle, and the RSS once they are done.
4. memory: the demo under the same flood with a new analysis cycle every 5 ms, until
   ``--cycles`` cycles have run (read from the Reasoning panel's title): the RSS after
   the first cycle, after the last, and the slope of RSS over cycles in the second half
   (MB per 1,000 cycles; about 0 when memory is bounded).

Latencies are measured to the moment the bytes that show the change are read from the
pty, so they include the child's frame and the kernel, not this process's emulation.
p50/p99 are nearest-rank; the JSON's key figures are those of ``l``. On a shared machine
other load shows up as latency: the table gives the share of the key-press phase the
app's main thread spent runnable but waiting for a CPU (/proc/<pid>/schedstat).
Every child is ended with ``q``, then SIGTERM, then SIGKILL.
Nothing touches the network: the sim broker and the rules analyst are local.

Prints a table with the targets and, as its last line, JSON:
{"bench":"tui","startup_ms":…,"key_p50_ms":…,"key_p99_ms":…,"key_p99_idle_ms":…,
 "pause_p99_ms":…,"pause_p99_idle_ms":…,"cpu_pct":…,"tty_kbps":…,"rss_mb":…,
 "rss_first_mb":…,"rss_cycles":…,"rss_after_cycles_mb":…,"rss_slope_mb_per_1k":…}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pty_term import Term  # noqa: E402  (the pty + terminal emulator, shared)

COLS, ROWS = 120, 40
LEVELS = ("debug", "info", "warning", "error")  # the order `l` cycles through
PRESS_TIMEOUT_S = 2.0
TOTAL_BUDGET_S = 240  # a hard stop (SIGALRM): the bench never hangs
MEMORY_CYCLE_S = 0.005

TARGET_STARTUP_MS = 600.0
TARGET_KEY_P99_MS = 50.0
TARGET_CPU_PCT = 30.0
FLOOD_FLOOR = 1000.0  # the issue: a flood of at least 1,000 bus events/s

FLOOD_SEQ = re.compile(r"flood (\d+):")
CYCLE_TITLE = re.compile(r"Reasoning · cycle (\d+)")
FIRST_FLOOD_CYCLE = 100  # the demo's flood numbers its cycles from 100
PRICE_ROW = re.compile(r"│ AAPL\s+\d+\.\d\d")


class BenchTimeout(Exception):
    pass


# --------------------------------------------------------------------------- phases


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Startup:
    frame_ms: float | None
    first_byte_ms: float | None
    prices_ms: float | None
    quit_s: float | None
    exit_code: int | None


def measure_startup(argv: list[str], tmp: Path, timeout: float = 15.0) -> Startup:
    term = Term(argv, tmp, COLS, ROWS)
    try:
        term.spawn()
        frame = term.wait_for(term.complete_frame, timeout)
        prices = term.wait_for(lambda: PRICE_ROW.search(term.text()) is not None, 5.0)
    finally:
        quit_s = term.close()

    def ms(at: float | None) -> float | None:
        return None if at is None else (at - term.started) * 1000

    return Startup(ms(frame), ms(term.first_byte), ms(prices), quit_s, term.exit_code)


def wait_staged(term: Term) -> float:
    """Wait until the demo screen is fully drawn: both pending signals and the finished
    reasoning; the ms from spawn to its first complete frame."""
    frame = term.wait_for(term.complete_frame, 20.0)
    if frame is None:
        raise RuntimeError("the demo never drew its layout:\n" + term.text())
    staged = term.wait_for(
        lambda: "awaiting approval (2)" in term.text() and "Market view" in term.text(), 20.0
    )
    if staged is None:
        raise RuntimeError("the demo never finished staging:\n" + term.text())
    return (frame - term.started) * 1000


@dataclass(frozen=True)
class Probe:
    """A key whose effect is cheap and visible: the row found by ``anchor`` shows one of
    ``states`` and each press moves it to the next."""

    key: bytes
    name: str
    anchor: str
    states: tuple[str, ...]


LOG_KEY = Probe(b"l", "l log filter", "╭─ Log · ", tuple(f"Log · {lv}+" for lv in LEVELS))
"""The measured key: handled on the UI loop, shown in the Log panel's title. While the
filter is at warning+ or error+ the flood's info lines are not drawn, so half the presses
meet a lighter render load (ticks and reasoning still flow)."""
PAUSE_KEY = Probe(b"p", "p pause/resume", " Perun ", ("● waiting", "● paused"))
"""Every third press: the command's feedback, the header's state, which the screen
reads from the daemon right after the command."""
PAUSE_FOOTER = ("q Quit", ("p Pause", "p Resume"))
"""... and, timed from the same press, the footer's label: Textual rebuilds the footer
when a binding changes (a layout pass), so it follows a little later."""
FOOTER = f"{PAUSE_KEY.name} (footer)"
PROBES = (LOG_KEY, PAUSE_KEY)


def press_keys(
    term: Term, presses: int, seed: int, budget_s: float
) -> tuple[dict[str, list[float]], int]:
    """Press ``l`` ``presses`` times and ``p`` after every third, each timed from the
    write until its row shows the next state; the ms per probe, and how many presses never
    showed (each counted as the timeout)."""
    rng = random.Random(seed)
    rows: list[int] = []
    states: list[int] = []
    for probe in PROBES:
        y = term.find_row(probe.anchor)
        if y is None:
            raise RuntimeError(f"no {probe.anchor!r} on screen:\n" + term.text())
        now = next((i for i, st in enumerate(probe.states) if st in term.row(y)), None)
        if now is None:
            raise RuntimeError(f"cannot read {probe.name} from: " + term.row(y))
        rows.append(y)
        states.append(now)
    latencies: dict[str, list[float]] = {probe.name: [] for probe in PROBES}
    misses = 0
    deadline = time.perf_counter() + budget_s
    schedule = [i for n in range(presses) for i in ((0, 1) if n % 3 == 2 else (0,))]
    for i in schedule:
        if time.perf_counter() > deadline:
            break
        probe, y = PROBES[i], rows[i]
        want = probe.states[(states[i] + 1) % len(probe.states)]
        sent = term.press(probe.key)
        seen = term.wait_for(lambda w=want, y=y: w in term.row(y), PRESS_TIMEOUT_S)
        if seen is None:
            misses += 1
            latencies[probe.name].append(PRESS_TIMEOUT_S * 1000)
            now = next((j for j, st in enumerate(probe.states) if st in term.row(y)), None)
            states[i] = now if now is not None else states[i] + 1
        else:
            latencies[probe.name].append(max(0.0, seen - sent) * 1000)
            states[i] += 1
        if probe is PAUSE_KEY:
            anchor, labels = PAUSE_FOOTER
            fy = term.find_row(anchor)
            label = labels[states[i] % 2]
            footer = None if fy is None else term.wait_for(
                lambda fy=fy, label=label: label in term.row(fy), PRESS_TIMEOUT_S
            )
            waited = PRESS_TIMEOUT_S if footer is None else max(0.0, footer - sent)
            latencies.setdefault(FOOTER, []).append(waited * 1000)
        term.drain(rng.uniform(0.06, 0.18))  # off any frame rhythm
    if states[1] % 2:  # leave the daemon running
        term.press(b"p")
        term.drain(0.2)
    return latencies, misses


def newest_flood_seq(term: Term) -> int | None:
    seqs = [int(m) for m in FLOOD_SEQ.findall(term.text())]
    return max(seqs) if seqs else None


@dataclass
class Phase:
    startup_ms: float | None = None
    by_key: dict[str, list[float]] = field(default_factory=dict)
    misses: int = 0
    harness_pct: float | None = None
    wait_pct: float | None = None  # while pressing: runnable, waiting for a CPU

    @property
    def latencies(self) -> list[float]:
        return self.by_key.get(LOG_KEY.name, [])
    cpu_pct: float | None = None
    tty_kbps: float | None = None
    events_per_s: float | None = None
    rss_start_mb: float | None = None
    rss_mb: float | None = None
    quit_s: float | None = None
    exit_code: int | None = None


def run_demo(tmp: Path, presses: int, flood: float, window_s: float, seed: int) -> Phase:
    argv = ["-m", "perun_tui.tui.demo"] + (["--flood", f"{flood:g}"] if flood else [])
    term = Term(argv, tmp, COLS, ROWS)
    phase = Phase()
    try:
        term.spawn()
        phase.startup_ms = wait_staged(term)
        if flood:
            if term.wait_for(lambda: newest_flood_seq(term) is not None, 10.0) is None:
                raise RuntimeError("the flood never reached the Log panel:\n" + term.text())
            term.drain(1.0)  # warm up
            phase.rss_start_mb = term.rss_mb()
            seq0, cpu0, bytes0 = newest_flood_seq(term), term.cpu_s(), term.bytes_read
            feed0, t0 = term.feed_s, time.perf_counter()
            term.drain(window_s)
            wall = time.perf_counter() - t0
            seq1, cpu1, bytes1 = newest_flood_seq(term), term.cpu_s(), term.bytes_read
            phase.cpu_pct = (cpu1 - cpu0) / wall * 100
            phase.harness_pct = (term.feed_s - feed0) / wall * 100
            phase.tty_kbps = (bytes1 - bytes0) / wall / 1000
            if seq0 is not None and seq1 is not None:
                phase.events_per_s = (seq1 - seq0) / wall
        else:
            term.drain(0.5)
            phase.rss_start_mb = term.rss_mb()
        wait0, t0 = term.cpu_wait_s(), time.perf_counter()
        phase.by_key, phase.misses = press_keys(term, presses, seed, budget_s=40.0)
        phase.wait_pct = (term.cpu_wait_s() - wait0) / (time.perf_counter() - t0) * 100
        phase.rss_mb = term.rss_mb()
    finally:
        phase.quit_s = term.close()
        phase.exit_code = term.exit_code
    return phase


@dataclass
class Memory:
    first_mb: float | None = None  # after the first flood cycle
    after_mb: float | None = None
    cycles: int = 0
    slope_mb_per_1k: float | None = None  # over the second half of the run
    samples: list[tuple[int, float]] = field(default_factory=list)


def shown_cycle(term: Term) -> int | None:
    match = CYCLE_TITLE.search(term.text())
    return int(match.group(1)) if match else None


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS (MB) per 1,000 cycles."""
    if len(points) < 3:
        return None
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / var * 1000


def run_memory(tmp: Path, flood: float, cycles: int, budget_s: float) -> Memory:
    argv = ["-m", "perun_tui.tui.demo", "--flood", f"{flood:g}",
            "--cycle-s", f"{MEMORY_CYCLE_S:g}"]
    term = Term(argv, tmp, COLS, ROWS)
    memory = Memory()
    try:
        term.spawn()
        wait_staged(term)
        seen = term.wait_for(
            lambda: (shown_cycle(term) or 0) > FIRST_FLOOD_CYCLE, 20.0
        )
        if seen is None:
            raise RuntimeError("the flood's cycles never reached the screen:\n" + term.text())
        memory.first_mb = term.rss_mb()
        start = shown_cycle(term) or FIRST_FLOOD_CYCLE
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline:
            term.drain(1.0)
            done = (shown_cycle(term) or start) - FIRST_FLOOD_CYCLE
            memory.samples.append((done, term.rss_mb()))
            if done >= cycles:
                break
        memory.cycles, memory.after_mb = memory.samples[-1] if memory.samples else (0, None)
        half = memory.cycles / 2
        memory.slope_mb_per_1k = slope([p for p in memory.samples if p[0] >= half])
    finally:
        term.close()
    return memory


# --------------------------------------------------------------------------- report


def _p(phase: Phase, name: str, pct: float) -> float | None:
    values = phase.by_key.get(name)
    if not values:
        return None
    return statistics.median(values) if pct == 50 else nearest_rank(values, pct)


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def main() -> int:
    try:
        return bench()
    except (BenchTimeout, RuntimeError) as exc:
        print(f"bench failed: {exc}")
        print(json.dumps({"bench": "tui", "error": str(exc).splitlines()[0]}))
        return 1


def bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=100, help="key presses per phase (≥ 40)")
    parser.add_argument(
        "--flood", type=float, default=1050.0,
        help="bus events per second asked of the demo (its timers deliver a little less; "
             f"the flood must reach {FLOOD_FLOOR:g}/s)",
    )
    parser.add_argument("--window", type=float, default=8.0, help="seconds of flood measured")
    parser.add_argument("--starts", type=int, default=3, help="spawns of perun for startup")
    parser.add_argument("--cycles", type=int, default=10_000,
                        help="analysis cycles for the memory figure (0: skip it)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="every latency, on stderr")
    args = parser.parse_args()

    def out_of_time(signum: int, frame: object) -> None:
        raise BenchTimeout(f"over the {TOTAL_BUDGET_S} s budget")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(TOTAL_BUDGET_S)
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="perun-bench-tui-") as tmp_name:
        tmp = Path(tmp_name)
        for sub in ("config", "data", "db"):
            (tmp / sub).mkdir()
        starts: list[Startup] = []
        for i in range(args.starts):
            run_dir = tmp / f"start{i}"
            for sub in ("config", "data", "db"):
                (run_dir / sub).mkdir(parents=True)
            starts.append(measure_startup(["-m", "perun_tui"], run_dir))
        idle = run_demo(tmp, args.presses, 0.0, args.window, args.seed)
        flood = run_demo(tmp, args.presses, args.flood, args.window, args.seed + 1)
        left = TOTAL_BUDGET_S - (time.perf_counter() - started) - 15
        memory = (
            run_memory(tmp, args.flood, args.cycles, left) if args.cycles > 0 else Memory()
        )
    signal.alarm(0)
    if args.verbose:
        for label, phase in (("idle", idle), ("flood", flood)):
            for name, values in phase.by_key.items():
                ms = " ".join(f"{v:.0f}" for v in sorted(values))
                print(f"{label} {name}: {ms}", file=sys.stderr)

    frames = [s.frame_ms for s in starts if s.frame_ms is not None]
    prices = [s.prices_ms for s in starts if s.prices_ms is not None]
    firsts = [s.first_byte_ms for s in starts if s.first_byte_ms is not None]
    quits = [s.quit_s for s in starts if s.quit_s is not None]
    startup_ms = statistics.median(frames) if frames else None
    idle_p50 = statistics.median(idle.latencies) if idle.latencies else None
    idle_p99 = nearest_rank(idle.latencies, 99) if idle.latencies else None
    key_p50 = statistics.median(flood.latencies) if flood.latencies else None
    key_p99 = nearest_rank(flood.latencies, 99) if flood.latencies else None
    key_ok = None if key_p99 is None or idle_p99 is None else (
        key_p99 <= TARGET_KEY_P99_MS and key_p99 <= 2 * idle_p99
    )

    pause = PAUSE_KEY.name
    rows = [
        ("startup to first complete frame (perun, sim)", fmt(startup_ms, " ms", 0),
         f"≤ {TARGET_STARTUP_MS:.0f} ms",
         verdict(None if startup_ms is None else startup_ms <= TARGET_STARTUP_MS)),
        ("  spawns, frame ms each", " ".join(fmt(s.frame_ms, "", 0) for s in starts), "", ""),
        ("  first byte on the terminal", fmt(statistics.median(firsts) if firsts else None,
                                             " ms", 0), "", ""),
        ("  first prices shown", fmt(statistics.median(prices) if prices else None, " ms", 0),
         "≤ 2000 ms", verdict(None if not prices else statistics.median(prices) <= 2000)),
        ("  q to exit (exit codes)", fmt(max(quits) if quits else None, " s", 2)
         + f" ({','.join(str(s.exit_code) for s in starts)})", "≤ 5 s, 0",
         verdict(len(quits) == len(starts) and all(s.exit_code == 0 for s in starts))),
        ("  demo startup (idle / flood run)", f"{fmt(idle.startup_ms, '', 0)} / "
         f"{fmt(flood.startup_ms, ' ms', 0)}", "", ""),
        ("key p50, idle (l → Log title)", fmt(idle_p50, " ms"), "", ""),
        ("key p99, idle (the baseline)", fmt(idle_p99, " ms"), "", ""),
        (f"key p50, flood {args.flood:g}/s", fmt(key_p50, " ms"), "", ""),
        (f"key p99, flood {args.flood:g}/s", fmt(key_p99, " ms"),
         f"≤ {TARGET_KEY_P99_MS:.0f} ms and ≤ 2× idle ({fmt(idle_p99 and 2 * idle_p99, ' ms')})",
         verdict(key_ok)),
        (f"{pause}, header: p50/p99 idle, flood", f"{fmt(_p(idle, pause, 50))} / "
         f"{fmt(_p(idle, pause, 99))}, {fmt(_p(flood, pause, 50))} / "
         f"{fmt(_p(flood, pause, 99), ' ms')}", "", ""),
        ("  the footer's label (rebuilt)", f"{fmt(_p(idle, FOOTER, 50))} / "
         f"{fmt(_p(idle, FOOTER, 99))}, {fmt(_p(flood, FOOTER, 50))} / "
         f"{fmt(_p(flood, FOOTER, 99), ' ms')}", "", ""),
        ("  l presses (idle / flood), any missed",
         f"{len(idle.latencies)} / {len(flood.latencies)}, {idle.misses} / {flood.misses}",
         "≥ 40, 0",
         verdict(min(len(idle.latencies), len(flood.latencies)) >= 40
                 and idle.misses + flood.misses == 0)),
        ("  app waited for a CPU while keys pressed", f"{fmt(idle.wait_pct, '', 1)} / "
         f"{fmt(flood.wait_pct, ' %', 1)}", "(idle / flood: other load)", ""),
        ("  flood achieved (events/s)", fmt(flood.events_per_s, "", 0), f"≥ {FLOOD_FLOOR:g}",
         verdict(None if flood.events_per_s is None
                 else flood.events_per_s >= FLOOD_FLOOR)),
        ("CPU during the flood (% of one core)", fmt(flood.cpu_pct, " %"),
         f"≤ {TARGET_CPU_PCT:.0f} %",
         verdict(None if flood.cpu_pct is None else flood.cpu_pct <= TARGET_CPU_PCT)),
        ("written to the terminal during the flood", fmt(flood.tty_kbps, " kB/s"), "", ""),
        ("  this process emulating it (% of a core)", fmt(flood.harness_pct, " %"), "", ""),
        ("RSS idle / flood start / after flood", f"{fmt(idle.rss_mb, '', 1)} / "
         f"{fmt(flood.rss_start_mb, '', 1)} / {fmt(flood.rss_mb, ' MB', 1)}", "", ""),
        (f"RSS after the first flood cycle / after {memory.cycles:,} cycles",
         f"{fmt(memory.first_mb, '', 1)} / {fmt(memory.after_mb, ' MB', 1)}",
         f"{args.cycles:,} cycles" if args.cycles else "", verdict(
             None if not args.cycles else memory.cycles >= args.cycles)),
        ("  RSS slope over the second half", fmt(memory.slope_mb_per_1k, " MB/1k cycles", 2),
         "≈ 0 (bounded)", verdict(None if memory.slope_mb_per_1k is None
                                  else memory.slope_mb_per_1k <= 0.1)),
        ("demo q to exit (idle / flood, codes)", f"{fmt(idle.quit_s, ' s', 2)} / "
         f"{fmt(flood.quit_s, ' s', 2)} ({idle.exit_code},{flood.exit_code})", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    twidth = max(len(r[2]) for r in rows)
    print(f"TUI bench: {COLS}×{ROWS} pty + pyte, TERM=xterm-256color, "
          f"{os.cpu_count()} CPU(s), load {load:.2f} → {os.getloadavg()[0]:.2f}, "
          f"{time.perf_counter() - started:.0f} s")
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  {'target':<{twidth}}  verdict")
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target:<{twidth}}  {ok}")

    def r1(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    print(json.dumps({
        "bench": "tui",
        "startup_ms": r1(startup_ms),
        "key_p50_ms": r1(key_p50),
        "key_p99_ms": r1(key_p99),
        "key_p99_idle_ms": r1(idle_p99),
        "cpu_pct": r1(flood.cpu_pct),
        "tty_kbps": r1(flood.tty_kbps),
        "rss_mb": r1(flood.rss_mb),
        "pause_p99_ms": r1(_p(flood, pause, 99)),
        "pause_p99_idle_ms": r1(_p(idle, pause, 99)),
        "rss_first_mb": r1(memory.first_mb),
        "rss_cycles": memory.cycles,
        "rss_after_cycles_mb": r1(memory.after_mb),
        "rss_slope_mb_per_1k": None if memory.slope_mb_per_1k is None
        else round(memory.slope_mb_per_1k, 3),
    }, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
