"""One-shot commands: `perun doctor`, `perun halt`, `perun resume`, `perun report`.

They act on the same database as a running daemon (which picks a halt up within
seconds), and never print a secret: keys are shown masked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime

from rich.console import Console
from rich.table import Table

from perun_tui.config import ConfigError, Settings
from perun_tui.daemon import HALT_KEY, LOSS_BASE_KEY, RESUME_PENDING
from perun_tui.redact import redact, register_secrets
from perun_tui.report_view import render_report
from perun_tui.services.history import session_bounds
from perun_tui.services.memory import Memory
from perun_tui.services.optimization import performance_report
from perun_tui.services.suggestions import (
    SuggestionError,
    apply_suggestion,
    revert_change,
    settings_file,
)

Check = tuple[str, bool, str]


async def _database_checks(settings: Settings) -> list[Check]:
    path = settings.database_path()
    try:
        started = time.perf_counter()
        memory = await Memory.open(path)
        try:
            integrity = await memory.integrity_check()
            halted = await memory.get_state(HALT_KEY)
        finally:
            await memory.close()
        ms = (time.perf_counter() - started) * 1000
    except Exception as exc:
        return [("database", False, f"{path}: {exc} — check storage.path and permissions")]
    checks: list[Check] = [
        ("database", integrity == "ok", f"{path} (integrity {integrity}, opened in {ms:.0f} ms)")
    ]
    if halted:
        checks.append(("halt", False, f"halted: {halted} — clear with `perun resume`"))
    return checks


async def _analyst_checks(settings: Settings) -> list[Check]:
    if settings.llm.provider == "rules":
        return [("analyst", True, 'rules analyst (llm.provider = "rules")')]
    from perun_tui.llm.ollama import OllamaAnalyst

    analyst = OllamaAnalyst(settings.llm)
    try:
        return list(await analyst.doctor_checks())
    finally:
        await analyst.close()


async def _broker_checks(settings: Settings) -> list[Check]:
    if settings.trading.mode == "sim":
        return [("broker", True, "simulated exchange (sim mode: no keys needed)")]
    from perun_tui.brokers.alpaca import AlpacaBroker

    broker = AlpacaBroker(settings)
    try:
        return list(await broker.doctor_checks())
    finally:
        await broker.close()


async def run_doctor(settings: Settings, console: Console | None = None) -> int:
    register_secrets(settings.secret_values())
    console = console or Console()
    checks: list[Check] = [
        (
            "config",
            True,
            f"{settings.source} · mode {settings.trading.mode} · "
            f"{len(settings.trading.symbols)} symbols",
        ),
    ]
    # paper/live keys: the broker's own checks say whether they are set, and work
    sections: list[Callable[[Settings], Awaitable[list[Check]]]] = [
        _database_checks,
        _analyst_checks,
        _broker_checks,
    ]
    for section in sections:
        try:
            checks.extend(await section(settings))
        except Exception as exc:
            checks.append(
                (
                    section.__name__.strip("_").replace("_checks", ""),
                    False,
                    f"{type(exc).__name__}: {exc}",
                )
            )
    table = Table(title="perun doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail / what to do", overflow="fold")
    for name, ok, detail in checks:
        table.add_row(name, "[green]OK[/]" if ok else "[red]problem[/]", redact(detail))
    console.print(table)
    return 0 if all(ok for _, ok, _ in checks) else 1


async def set_halt(settings: Settings, reason: str | None) -> int:
    memory = await Memory.open(settings.database_path())
    try:
        await memory.set_state(HALT_KEY, reason)
        if not reason:  # the daily loss is measured from the equity at the next cycle
            await memory.set_state(LOSS_BASE_KEY, RESUME_PENDING)
    finally:
        await memory.close()
    if reason:
        print(
            f"halted ({settings.trading.mode}): {reason}. A running perun stops trading "
            "within seconds; clear it with `perun resume`."
        )
    else:
        print(f"halt cleared ({settings.trading.mode}).")
    return 0


def report_range(
    since: str | None, until: str | None
) -> tuple[datetime | None, datetime | None]:
    """`--since` / `--until` as New York calendar days (YYYY-MM-DD), both inclusive."""

    def day(text: str, what: str) -> date:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"--{what} {text!r} is not a date; use YYYY-MM-DD") from None

    first = day(since, "since") if since else None
    last = day(until, "until") if until else None
    if first is not None and last is not None and first > last:
        raise ConfigError(
            f"--since {first.isoformat()} is after --until {last.isoformat()}: the range is "
            "empty; give the earlier day first"
        )
    start = session_bounds(first)[0] if first else None
    end = session_bounds(last)[1] if last else None
    return start, end


async def run_report(
    settings: Settings,
    *,
    as_json: bool,
    console: Console | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """`perun report [--json]`: every metric, the calibration table, frequency analysis
    and suggestions, from this mode's database."""
    path = settings.database_path()
    if not path.exists():
        print(f"no history yet for {settings.trading.mode} mode ({path}): run some cycles "
              "first (`perun run --headless --cycles 5`)")
        return 0
    memory = await Memory.open(path)
    try:
        report = await performance_report(memory, settings, since=since, until=until)
    finally:
        await memory.close()
    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    console = console or Console()
    console.print(render_report(report, width=console.width))
    if report.suggestions and any(s.key for s in report.suggestions):
        console.print(
            "Apply a suggestion with `perun apply <id>`, undo with `perun revert <change id>` "
            "(or press o in the TUI).",
            style="dim",
        )
    return 0


async def run_apply(settings: Settings, suggestion_id: str, console: Console | None = None) -> int:
    """`perun apply <id>`: apply one suggestion from a fresh report, recorded and reversible."""
    console = console or Console()
    memory = await Memory.open(settings.database_path())
    try:
        report = await performance_report(memory, settings)
        found = next((s for s in report.suggestions if s.id == suggestion_id), None)
        if found is None:
            known = ", ".join(s.id for s in report.suggestions if s.key) or "none"
            console.print(f"no current suggestion {suggestion_id} (current: {known})")
            return 1
        try:
            change = await apply_suggestion(memory, settings, settings_file(settings), found)
        except SuggestionError as exc:
            console.print(f"not applied: {exc}")
            return 1
    finally:
        await memory.close()
    notes = [n for n in change.note.split("; ") if n]
    if not any(n.startswith("created ") for n in notes):
        notes.insert(0, f"written to {change.persisted_to}")
    lines = [
        f"applied {change.id}: {change.key} {change.old} → {change.new}",
        *(f"  {n}" for n in notes),
        f"A running perun picks it up on restart; undo with `perun revert {change.id}`.",
    ]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    return 0


async def run_revert(settings: Settings, change_id: str, console: Console | None = None) -> int:
    """`perun revert <change id>`: put a recorded change's old value back."""
    console = console or Console()
    memory = await Memory.open(settings.database_path())
    try:
        try:
            change = await revert_change(memory, settings, None, change_id)
        except SuggestionError as exc:
            console.print(f"not reverted: {exc}")
            return 1
    finally:
        await memory.close()
    console.print(
        f"reverted {change.id}: {change.key} is {change.old} again in {change.persisted_to}",
        markup=False,
        highlight=False,
    )
    return 0
