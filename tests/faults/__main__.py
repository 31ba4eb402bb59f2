"""The long crash-safety run.

    python -m tests.faults --kills 200                 # ~15 min on 2 cores
    python -m tests.faults --kills 20 --soak 0         # a quick look
    python -m tests.faults --kills 200 --keep /tmp/f   # keep the databases to inspect

Kills are split between the sim exchange and the loopback Alpaca server (paper mode): a
tenth of them (``--crash-points``) at the named crash points of ``child.py`` (after the
intent commit, after the broker's acceptance, mid-fill), the rest ``kill -9`` at random
moments; SIGTERM/SIGHUP/SIGINT interruptions (default: a quarter of the kills) are mixed
in; then ``--soak`` seconds of broker and model faults against one long-running process.
Progress goes to stderr; stdout gets a detail line, then — last — the headline JSON::

    {"bench":"faults","kills":200,"duplicates":0,"lost_signals":0,
     "unknown_broker_orders":0,"integrity_failures":0,"position_mismatches":0,
     "unrecorded_events":0,"fill_gaps":0,"slow_exits":0,"crashes":0,
     "soak_invisible":0,"soak_stuck":0,"soak_unfired":0,"ok":true}

Every counter that fails the run is in it, and ``ok`` is false when any is not 0.
Exit code 0 when every invariant held (see ``harness.py``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.child import CRASH_POINTS
from tests.faults.harness import Tally, run_series
from tests.faults.soak import run_soak


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--kills", type=int, default=200, help="kill -9 points in all")
    parser.add_argument(
        "--interrupts", type=int, default=None, help="SIGTERM/SIGHUP/SIGINT (default kills/4)"
    )
    parser.add_argument("--soak", type=float, default=120.0, help="seconds of faults (0: none)")
    parser.add_argument(
        "--crash-points", type=int, default=None,
        help="kills at each named crash point, per backend (default: kills/30)",
    )
    parser.add_argument("--backend", choices=["both", "sim", "paper"], default="both")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    interrupts = args.kills // 4 if args.interrupts is None else args.interrupts
    modes = ["sim", "paper"] if args.backend == "both" else [args.backend]
    per_point = args.kills // 30 if args.crash_points is None else args.crash_points
    hooks = per_point * len(CRASH_POINTS)  # per backend, part of its share of the kills

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="perun-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    total = Tally()
    soak_figures: dict[str, object] = {}
    try:
        for i, mode in enumerate(modes):
            kills = args.kills // len(modes) + (1 if i < args.kills % len(modes) else 0)
            stops = interrupts // len(modes) + (1 if i < interrupts % len(modes) else 0)
            crashes = min(hooks, kills)
            _log(f"== {mode}: {kills} kills ({crashes} at crash points), {stops} interrupts")
            total.add(
                run_series(
                    mode, root / mode, kills=kills - crashes, interrupts=stops,
                    crashes_per_point=crashes // len(CRASH_POINTS), seed=args.seed + i, log=_log,
                )
            )
        if args.soak > 0:
            _log(f"== soak: {args.soak:g} s of broker and model faults")
            soak = run_soak(root / "soak", args.soak, seed=args.seed, log=_log)
            total.add(soak.tally)  # its unfired/invisible/stuck counters included
            soak_figures = soak.figures()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - started
    details = {**total.details(), "soak": soak_figures, "seconds": round(seconds)}
    print(json.dumps(details), flush=True)
    print(json.dumps(total.headline(), separators=(",", ":")), flush=True)
    return 0 if total.ok else 1


if __name__ == "__main__":
    sys.exit(main())
