"""One-shot commands: `perun doctor`, `perun halt`, `perun resume`, `perun report`.

They act on the same database as a running daemon (which picks a halt up within
seconds), and never print a secret: keys are shown masked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.table import Table

from perun_tui.config import Settings, mask_secret
from perun_tui.daemon import HALT_KEY
from perun_tui.redact import redact, register_secrets
from perun_tui.services.memory import Memory
from perun_tui.services.optimization import compute_metrics

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
    if settings.trading.mode != "sim":
        key = settings.alpaca.key_id.get_secret_value()
        checks.append(
            (
                "alpaca keys",
                bool(key and settings.alpaca.secret_key.get_secret_value()),
                f"key id {mask_secret(key)} — set APCA_API_KEY_ID / APCA_API_SECRET_KEY"
                if not key
                else f"key id {mask_secret(key)}",
            )
        )
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


async def run_report(settings: Settings, *, as_json: bool, console: Console | None = None) -> int:
    memory = await Memory.open(settings.database_path())
    try:
        curve = await memory.equity_curve()
        fills = await memory.fills()
    finally:
        await memory.close()
    if not curve:
        print("no history yet: run some cycles first (`perun run --headless --cycles 5`)")
        return 0
    at, equity = curve[-1]
    metrics = compute_metrics(
        at=at,
        equity=equity,
        cash=0.0,
        positions=[],
        fills=fills,
        equity_curve=[e for _, e in curve],
    )
    if as_json:
        print(json.dumps(metrics.model_dump(mode="json")))
        return 0
    console = console or Console()
    table = Table(title=f"perun report ({settings.trading.mode})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("equity", f"{metrics.equity:,.2f}")
    table.add_row("realized P&L", f"{metrics.realized_pl:+,.2f}")
    table.add_row("closed trades", str(metrics.trades))
    table.add_row("win rate", f"{metrics.win_rate:.0%}")
    table.add_row("max drawdown", f"{metrics.max_drawdown_pct:.2f}%")
    console.print(table)
    return 0
