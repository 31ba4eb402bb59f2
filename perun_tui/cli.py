"""`perun` entry point and subcommands.

    perun                         the terminal UI (sim mode by default)
    perun run --headless          the daemon without a screen, one line per event
    perun doctor                  check config, database, Ollama and the broker
    perun halt / perun resume     the kill switch, from any shell (same database)
    perun report                  performance from memory

Exit codes: 0 ok, 1 runtime failure or a problem found, 2 invalid configuration/usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from perun_tui import __version__
from perun_tui.config import ConfigError, Settings, load_settings
from perun_tui.redact import redact
from perun_tui.services.instance_lock import AlreadyRunning

DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str) -> float:
    """'200ms', '5s', '1m', '2h', or bare seconds → seconds."""
    match = DURATION_RE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use e.g. 200ms, 5s, 1m or 2h"
        )
    value = float(match.group(1))
    unit = match.group(2) or "s"
    seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _global_flags(default: object) -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--config", metavar="PATH", default=default, help="perun.toml to use")
    flags.add_argument(
        "--mode",
        choices=["sim", "paper", "live"],
        default=default,
        help="override trading.mode for this run",
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    # The global flags are accepted before and after the subcommand; the subcommand's copy
    # only sets them when given, so `perun --mode paper run` keeps "paper".
    common = _global_flags(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="perun",
        parents=[_global_flags(None)],
        description="Perun: an LLM trading terminal (sim by default; no keys needed).",
    )
    parser.add_argument("--version", action="version", version=f"perun {__version__}")
    parser.add_argument(
        "--no-mouse", action="store_true", help="do not enable mouse tracking (friendlier over SSH)"
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument("--headless", action="store_true", help="no TUI; one line per event")
    run.add_argument("--cycles", type=positive_int, metavar="N", help="stop after N cycles")
    run.add_argument(
        "--every",
        type=parse_duration,
        metavar="DURATION",
        help="real time between cycles for this run (200ms, 5s, 1m)",
    )
    run.add_argument("--json", action="store_true", help="JSON lines instead of text")
    run.add_argument("--verbose", action="store_true", help="also print quotes and portfolio")
    run.add_argument(
        "--confirm-live",
        action="store_true",
        help="headless live trading: the typed confirmation's equivalent",
    )
    run.add_argument("--no-mouse", action="store_true", help=argparse.SUPPRESS)

    sub.add_parser("doctor", parents=[common], help="check config, database, Ollama, broker")
    halt = sub.add_parser("halt", parents=[common], help="halt trading (kill switch)")
    halt.add_argument("reason", nargs="?", default="halted from the command line")
    sub.add_parser("resume", parents=[common], help="clear a halt")
    report = sub.add_parser("report", parents=[common], help="performance report")
    report.add_argument("--json", action="store_true")
    report.add_argument("--since", metavar="YYYY-MM-DD", help="first day (New York date)")
    report.add_argument("--until", metavar="YYYY-MM-DD", help="last day (New York date)")
    apply = sub.add_parser("apply", parents=[common], help="apply a suggestion by its id")
    apply.add_argument("id", help="the id shown by `perun report`")
    revert = sub.add_parser("revert", parents=[common], help="undo an applied change")
    revert.add_argument("id", help="the change id shown by `perun report`")
    return parser


def opens_terminal(argv: Sequence[str]) -> bool:
    """Whether these arguments start the terminal UI (no command, or `run` with a screen)."""
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            args = build_parser().parse_args(argv)
    except SystemExit:  # --help, --version or a usage error: main() says it
        return False
    return args.command is None or (args.command == "run" and not args.headless)


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, mode=args.mode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _load(args)
        if (
            settings.trading.mode == "live"
            and args.command == "run"
            and args.headless
            and (not args.confirm_live)
        ):
            raise ConfigError(
                "live trading headless needs --confirm-live (and trading.live_confirm = true)"
            )
    except ConfigError as exc:
        print(f"perun: {redact(str(exc))}", file=sys.stderr)
        return ConfigError.exit_code
    command = args.command
    try:
        if command == "run" and args.headless:
            from perun_tui.headless import run_headless

            code = asyncio.run(
                run_headless(
                    settings,
                    cycles=args.cycles,
                    every_s=args.every,
                    as_json=args.json,
                    verbose=args.verbose,
                )
            )
            exit_now(code)
        if command == "doctor":
            from perun_tui.commands import run_doctor

            return asyncio.run(run_doctor(settings))
        if command in ("halt", "resume"):
            from perun_tui.commands import set_halt

            reason = args.reason if command == "halt" else None
            return asyncio.run(set_halt(settings, reason))
        if command == "report":
            from perun_tui.commands import report_range, run_report

            since, until = report_range(args.since, args.until)
            return asyncio.run(run_report(settings, as_json=args.json, since=since, until=until))
        if command == "apply":
            from perun_tui.commands import run_apply

            return asyncio.run(run_apply(settings, args.id))
        if command == "revert":
            from perun_tui.commands import run_revert

            return asyncio.run(run_revert(settings, args.id))
        return _run_tui(settings, args)
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        print(f"perun: {redact(str(exc))}", file=sys.stderr)
        return ConfigError.exit_code
    except AlreadyRunning as exc:
        print(f"perun: {exc}", file=sys.stderr)
        return AlreadyRunning.exit_code


def exit_now(code: int) -> NoReturn:
    """End the process once the daemon has stopped and the database is closed.

    The interpreter would otherwise wait at exit for every worker thread — one stuck in
    a broker HTTP call that never answers holds it there until its session timeout
    (``alpaca.request_timeout_s``, 10 s by default), breaking the promise to exit within
    5 s of a signal. Nothing is left to save: output is flushed here, then ``os._exit``.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def _run_tui(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from perun_tui.tui.app import run_tui
    except ImportError:  # pragma: no cover - the TUI ships with the package
        from perun_tui.headless import run_headless

        return asyncio.run(run_headless(settings, cycles=None, every_s=None, as_json=False))
    cycles = getattr(args, "cycles", None)
    every = getattr(args, "every", None)
    return run_tui(settings, mouse=not args.no_mouse, cycles=cycles, every_s=every)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
