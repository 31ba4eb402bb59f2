"""`perun report`: a database filled by hand gives the numbers worked out by hand, and a
sim run prints every metric, the calibration table and the suggestions (and --json)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from perun_tui.commands import report_range, run_apply, run_report, run_revert
from perun_tui.config import ConfigError, Settings, load_settings, user_config_file
from perun_tui.headless import run_headless
from perun_tui.models import (
    Account,
    Action,
    Fill,
    Position,
    Quote,
    Side,
    Signal,
    SignalStatus,
    SignalTransition,
)
from perun_tui.runtime import build_runtime
from perun_tui.services.memory import Memory
from perun_tui.services.notification import NotificationService
from perun_tui.services.optimization import Optimizer, performance_report
from perun_tui.services.suggestions import Suggestion, SuggestionError, load_changes
from tests.sim import SIM_START

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # Monday 09:30 New York


def settings_for(tmp_path: Path, **env: str) -> Settings:
    base = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_TRADING__SYMBOLS": "A,B",
    }
    base.update(env)
    return load_settings(env=base, cwd=tmp_path, use_dotenv=False)


def quotes(at: datetime, **prices: float) -> dict[str, Quote]:
    return {s: Quote(symbol=s, ts=at, bid=p, ask=p, last=p) for s, p in prices.items()}


def signal(
    n: int, cycle: int, symbol: str, action: Action, conf: float, price: float,
    status: SignalStatus,
) -> Signal:
    return Signal(
        id=f"s{n}", cycle=cycle, symbol=symbol, action=action, confidence=conf, rationale="",
        analyst="rules", created_at=T0 + timedelta(minutes=15 * (cycle - 1), seconds=1),
        price=price, status=status,
    )


async def fill_by_hand(settings: Settings) -> None:
    """Four cycles: buy 10 A @ 100, sell 5 A @ 120; a person rejects a buy of B."""
    at = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    rows = [  # (cash, qty A, A, B)
        (10_000, 0, 100, 50),
        (9_000, 10, 105, 50),
        (9_000, 10, 120, 55),
        (9_600, 5, 110, 55),
    ]
    async with await Memory.open(settings.database_path()) as memory:
        for i, (cash, qty, a, b) in enumerate(rows):
            equity = cash + qty * a
            positions = (
                [Position(symbol="A", qty=qty, avg_price=100, market_price=a)] if qty else []
            )
            await memory.save_snapshot(
                i + 1, at[i], Account(cash=cash, equity=equity, buying_power=cash), positions,
                quotes(at[i], A=a, B=b),
            )
        s1 = signal(1, 1, "A", Action.BUY, 0.7, 100, SignalStatus.FILLED)
        s2 = signal(2, 3, "A", Action.SELL, 0.6, 120, SignalStatus.FILLED)
        s3 = signal(3, 2, "B", Action.BUY, 0.65, 50, SignalStatus.REJECTED)
        t3 = SignalTransition(signal_id="s3", old=SignalStatus.PENDING,
                              new=SignalStatus.REJECTED, by="user", reason="no", at=at[1])
        await memory.save_signals([s1, s2, (s3, t3)])
        await memory.save_fill(Fill(fill_id="f1", client_order_id="o1", symbol="A",
                                    side=Side.BUY, qty=10, price=100,
                                    ts=at[0] + timedelta(seconds=2)))
        await memory.save_fill(Fill(fill_id="f2", client_order_id="o2", symbol="A",
                                    side=Side.SELL, qty=5, price=120,
                                    ts=at[2] + timedelta(seconds=2)))


async def test_report_numbers_from_a_hand_made_history(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, PERUN_OPTIMIZATION__HORIZONS="1,5",
                            PERUN_OPTIMIZATION__PRIMARY_HORIZON="1")
    await fill_by_hand(settings)
    async with await Memory.open(settings.database_path()) as memory:
        report = await performance_report(memory, settings)
    r = report.returns
    assert (r.start_equity, r.end_equity) == (10_000, 10_150)
    assert r.total_return_pct == pytest.approx(1.5)
    assert r.realized_pl == pytest.approx(100.0)  # (120 - 100) × 5
    assert r.unrealized_pl == pytest.approx(50.0)  # (110 - 100) × 5
    assert r.benchmark_return_pct == pytest.approx(10.0)  # (110/100 + 55/50) / 2 - 1
    assert report.drawdown.max_drawdown_pct == pytest.approx(50 / 10_200 * 100)
    assert report.drawdown.peak_at == T0 + timedelta(minutes=30)
    assert report.trades.trades == 1 and report.trades.win_rate == 1.0
    assert report.activity.traded_notional == pytest.approx(1600.0)
    sc = report.scoring
    assert sc.signals == 3 and sc.primary == "+1"
    # s1 buy 100 → 105: +5%; s2 sell 120 → 110: +8.33%; s3 buy B 50 → 55: +10%
    overall = sc.overall.horizons["+1"]
    assert (overall.n, overall.hits) == (3, 3)
    assert overall.mean_return_pct == pytest.approx((5 + 100 / 12 + 10) / 3)
    o = sc.overrides
    assert (o.rejected, o.person_right, o.model_right) == (1, 0, 1)
    assert sc.overall.horizons["+5"].n == 0  # not reached
    assert report.track_records["A"].signals == 2
    sym = {s.symbol: s for s in report.symbols}
    assert sym["A"].hit_rate == 1.0 and sym["B"].signals == 1


async def test_report_prints_tables_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path)
    await fill_by_hand(settings)
    console = Console(record=True, width=120)
    assert await run_report(settings, as_json=False, console=console) == 0
    text = console.export_text()
    for label in (
        "total P&L", "realized P&L", "unrealized P&L", "benchmark return", "Sharpe",
        "Sortino", "max drawdown", "win rate", "profit factor", "average win",
        "average loss", "turnover", "exposure", "Per symbol", "Signal scoring", "confidence",
        "Calibration:", "Human overrides: 1 rejected by hand", "Frequency analysis",
        "Suggestions", "Equity vs benchmark",
    ):
        assert label in text, label
    capsys.readouterr()
    assert await run_report(settings, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["returns"]["realized_pl"] == pytest.approx(100.0)
    assert set(data) >= {
        "period", "returns", "risk", "drawdown", "trades", "activity", "symbols", "curve",
        "scoring", "frequency", "suggestions", "changes", "notes",
    }
    assert data["risk"]["basis"].startswith("one session only: 3 per-cycle")


async def test_no_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_report(settings_for(tmp_path), as_json=False) == 0
    assert "no history yet" in capsys.readouterr().out


async def test_sim_run_then_report_apply_and_revert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "perun.toml"
    config.write_text('[risk]\nmin_confidence = 0.55  # gate\n')
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_APPROVAL__MODE": "auto",
    }
    settings = load_settings(config, env=env, use_dotenv=False)
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=60, quote_interval_s=0.05)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
    finally:
        await runtime.close()
    console = Console(record=True, width=120)
    assert await run_report(settings, as_json=False, console=console) == 0
    text = console.export_text()
    assert "Sharpe" in text and "Signal scoring" in text and "Verdict:" in text
    async with await Memory.open(settings.database_path()) as memory:
        report = await performance_report(memory, settings)
    assert report.period.snapshots == 60 and report.scoring.signals > 0
    assert report.activity.fills > 0

    # apply and revert through the commands, with a suggestion we know applies
    suggestion = Suggestion(id="gmanual", kind="confidence_threshold",
                            key="risk.min_confidence", old=0.55, new=0.6, why="test")
    async with await Memory.open(settings.database_path()) as memory:
        assert await run_apply(settings, "gnope", Console(record=True)) == 1
        from perun_tui.services.suggestions import apply_suggestion

        change = await apply_suggestion(memory, settings, config, suggestion, environ={})
    assert "min_confidence = 0.6" in config.read_text()
    fresh = load_settings(config, env=env, use_dotenv=False)
    assert await run_revert(fresh, change.id, Console(record=True)) == 0
    assert "min_confidence = 0.55" in config.read_text()
    async with await Memory.open(settings.database_path()) as memory:
        (stored,) = await load_changes(memory)
    assert stored.reverted_at is not None


async def test_the_200_cycle_sim_run_reports_everything_with_evidence(tmp_path: Path) -> None:
    """The issue's done-means: `PERUN_APPROVAL__MODE=auto perun run --headless --cycles 200
    --every 50ms`, then `perun report`: every metric, the calibration table and at least
    one suggestion with its evidence (sim start pinned: the market depends on the day)."""
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
    }
    settings = load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    out = io.StringIO()
    code = await asyncio.wait_for(
        run_headless(settings, cycles=200, every_s=0.005, as_json=True, out=out), 120
    )
    assert code == 0
    console = Console(record=True, width=140)
    assert await run_report(settings, as_json=False, console=console) == 0
    text = console.export_text()
    for label in (
        "equity", "total P&L", "realized P&L", "unrealized P&L", "benchmark return",
        "vs benchmark", "Sharpe", "Sortino", "volatility", "max drawdown", "peak 20",
        "closed trades", "win rate", "profit factor", "average win", "average loss",
        "expectancy", "turnover", "exposure", "Per symbol", "Equity vs benchmark",
        "Signal scoring", "confidence", "0.60–0.70", "action", "what happened",
        "not proposed (limits)", "Calibration:", "Human overrides:", "Frequency analysis",
        "Verdict:", "Suggestions", "daily returns",
    ):
        assert label in text, label
    async with await Memory.open(settings.database_path()) as memory:
        report = await performance_report(memory, settings)
    assert report.period.snapshots == 200 and report.period.sessions > 5
    assert report.scoring.signals > report.activity.fills  # ideas not taken are scored too
    assert any(g.group == "not proposed (limits)" for g in report.scoring.by_disposition)
    assert report.suggestions, "no suggestion from 200 cycles"
    for s in report.suggestions:
        assert s.p_value is not None and s.p_value <= settings.optimization.max_p_value
        assert "cases at +5 cycles" in s.why or "replaying" in s.why
        assert s.id in text
    r = report.returns
    assert r.realized_pl + r.unrealized_pl == pytest.approx(r.total_pl, abs=0.05)


def test_cli_report_json(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    asyncio.run(fill_by_hand(settings))
    env = {
        **os.environ,
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_TRADING__SYMBOLS": "A,B",
    }
    out = subprocess.run(
        [sys.executable, "-m", "perun_tui.cli", "report", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True,
    )
    data = json.loads(out.stdout)
    assert data["returns"]["total_return_pct"] == pytest.approx(1.5)


# --------------------------------------------------------------------------- the optimizer


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.got: list[tuple[str, str, tuple[str, ...]]] = []

    async def send(self, notification: Any) -> None:
        self.got.append((notification.title, notification.message, notification.tags))


SIGNAL_CYCLES = range(1, 111, 5)  # 22 signals, 5 cycles apart: no two +5 windows overlap


async def rising_market_with_bad_sells(settings: Settings) -> None:
    """A rises 1 a cycle; every 5th cycle a signal on A: the first 12 are sells at
    confidence 0.6 (all wrong), the other 10 buys at 0.7 (all right)."""
    async with await Memory.open(settings.database_path()) as memory:
        for i in range(120):
            at = T0 + timedelta(minutes=15 * i)
            await memory.save_snapshot(
                i + 1, at, Account(cash=10_000, equity=10_000, buying_power=10_000), [],
                quotes(at, A=100 + i, B=50),
            )
        signals = [
            signal(c, c, "A", Action.SELL if k < 12 else Action.BUY, 0.6 if k < 12 else 0.7,
                   100 + c - 1, SignalStatus.FILLED)
            for k, c in enumerate(SIGNAL_CYCLES)
        ]
        await memory.save_signals(signals)


async def test_optimizer_auto_applies_within_bounds_and_reverts(tmp_path: Path) -> None:
    config = tmp_path / "perun.toml"
    config.write_text("[risk]\nmin_confidence = 0.6\n")
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_TRADING__SYMBOLS": "A,B",
        "PERUN_OPTIMIZATION__AUTO_APPLY": "true",
    }
    settings = load_settings(config, env=env, use_dotenv=False)
    await rising_market_with_bad_sells(settings)
    recorder = Recorder()
    async with await Memory.open(settings.database_path()) as memory:
        optimizer = Optimizer(memory, settings, NotificationService([recorder]),
                              settings_path=config)
        report = await optimizer.kick()
        assert report is not None
        # 0.60–0.65 lost 12 of 12, ≥ 0.65 won 10 of 10: Fisher's one-sided p is the chance
        # that the 10 hits all fall among the 10 buys, 1 / C(22, 10) = 1 / 646,646;
        # 0.6 → 0.65 is an 8% step, within 15%
        (change,) = report.changes
        assert (change.key, change.old, change.new, change.by) == (
            "risk.min_confidence", 0.6, 0.65, "auto"
        )
        assert settings.risk.min_confidence == 0.65
        assert "min_confidence = 0.65" in config.read_text()
        assert recorder.got[-1][0] == "Parameter changed" and recorder.got[-1][2] == ("change",)
        assert change.why == (
            "signals with confidence 0.6–0.65 lost in 12 of 12 cases at +5 cycles (mean "
            f"{-sum(500 / (99 + c) for c in SIGNAL_CYCLES[:12]) / 12:+.2f}%; no overlapping "
            f"windows); those at ≥ 0.65 won 10 of 10 (mean "
            f"{sum(500 / (99 + c) for c in SIGNAL_CYCLES[12:]) / 10:+.2f}%; no overlapping "
            "windows). Fisher's exact test: p = 0.000 that the lower band does no worse. "
            "Raise risk.min_confidence to 0.65"
        )
        assert "sell signals were followed by a rise in 12 of 12" in " ".join(
            s.why for s in report.suggestions
        )
        note = optimizer.track_note(["A", "B"])
        # signal at cycle c has price 99 + c and 5 more 5 cycles later: ±500 / (99 + c) %
        sells, buys = SIGNAL_CYCLES[:12], SIGNAL_CYCLES[12:]
        mean = (sum(500 / (99 + c) for c in buys) - sum(500 / (99 + c) for c in sells)) / 22
        assert note == (
            f"your past signals scored at +5 cycles: A 45% of 22 right, mean {mean:+.2f}%"
        )
        undone = await optimizer.revert(change.id)
        assert undone.reverted_at is not None and settings.risk.min_confidence == 0.6
        # reverted by a person: the same change is offered again but never auto-applied
        again = next(s for s in optimizer.last_report.suggestions  # type: ignore[union-attr]
                     if s.key == "risk.min_confidence")
        assert again.auto_ok is False and "reverted" in again.auto_note
        await optimizer.dismiss(again.id)
        fresh = await optimizer.report()
        assert all(s.id != again.id for s in fresh.suggestions)
        with pytest.raises(SuggestionError):
            await optimizer.apply(again.id)


async def test_the_daemon_runs_the_optimizer_at_start(tmp_path: Path) -> None:
    """Track records reach the analyst from the first cycles, not only after
    optimization.every_cycles cycles."""
    settings = settings_for(tmp_path, PERUN_OPTIMIZATION__EVERY_CYCLES="1000")
    await rising_market_with_bad_sells(settings)  # history from an earlier run
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=2, quote_interval_s=0.05)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
        optimizer = runtime.optimizer
        for _ in range(600):  # bounded: the report runs in a worker thread
            if optimizer.last_report is not None:
                break
            await asyncio.sleep(0.05)
        assert optimizer.runs == 1  # the start's run; no cycle reached every_cycles
        assert optimizer.track_note(["A"]).startswith(
            "your past signals scored at +5 cycles: A 45% of 22 right"
        )
    finally:
        await runtime.close()


async def test_the_analyst_is_given_its_track_record(tmp_path: Path) -> None:
    """The per-symbol scored outcomes reach the model: a later cycle's context carries the
    optimizer's track note (rendered into the prompt as its market note)."""
    from tests.integration.test_crash_safety import StubAnalyst

    class Recording(StubAnalyst):
        def __init__(self) -> None:
            self.notes: list[str] = []

        def ideas(self, context: Any) -> list[Any]:
            self.notes.append(context.market_note)
            return []

    settings = settings_for(tmp_path, PERUN_OPTIMIZATION__EVERY_CYCLES="1000")
    await rising_market_with_bad_sells(settings)  # history from an earlier run
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=None, quote_interval_s=0.05)
    analyst = Recording()
    runtime.daemon.analysis.primary = analyst
    task = asyncio.create_task(runtime.daemon.run())
    try:
        for _ in range(1200):  # bounded: the first report runs in a worker thread
            if any(analyst.notes) or task.done():
                break
            await asyncio.sleep(0.05)
        note = next((n for n in analyst.notes if n), "")
        assert note == runtime.optimizer.track_note(["A", "B"]), analyst.notes[-3:]
        assert note.startswith("your past signals scored at +5 cycles: A 45% of 22 right")
    finally:
        await runtime.daemon.stop()
        await asyncio.wait_for(task, 30)
        await runtime.close()


async def test_perun_apply_without_a_config_file_writes_the_user_config(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)  # no perun.toml anywhere: defaults + environment
    assert settings.source == "defaults"
    await rising_market_with_bad_sells(settings)
    async with await Memory.open(settings.database_path()) as memory:
        report = await performance_report(memory, settings)
    thr = next(s for s in report.suggestions if s.key == "risk.min_confidence")
    assert (thr.old, thr.new) == (0.55, 0.65)

    console = Console(record=True, width=200)
    assert await run_apply(settings, thr.id, console) == 0
    user = user_config_file()  # the test's own XDG_CONFIG_HOME (tests/conftest.py)
    said = console.export_text()
    assert said.splitlines() == [
        f"applied c1-{thr.id}: risk.min_confidence 0.55 → 0.65",
        f"  created {user}: no config file was in use",
        f"A running perun picks it up on restart; undo with `perun revert c1-{thr.id}`.",
    ]
    assert settings.risk.min_confidence == 0.65
    # the next start (any command) reads it back from where config loading looks
    fresh = settings_for(tmp_path)
    assert fresh.source == str(user) and fresh.risk.min_confidence == 0.65
    async with await Memory.open(settings.database_path()) as memory:
        (change,) = await load_changes(memory)
    assert change.in_force and change.persisted_to == str(user)
    shown = Console(record=True, width=200)
    assert await run_report(fresh, as_json=False, console=shown) == 0
    assert "in force" in shown.export_text()

    assert await run_revert(fresh, change.id, Console(record=True)) == 0
    assert settings_for(tmp_path).risk.min_confidence == 0.55
    async with await Memory.open(settings.database_path()) as memory:
        (change,) = await load_changes(memory)
    assert change.state == "reverted"


async def test_a_date_range_marks_positions_at_its_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await fill_by_hand(settings)
    async with await Memory.open(settings.database_path()) as memory:
        report = await performance_report(memory, settings, since=T0 + timedelta(minutes=20))
    assert report.period.snapshots == 2  # 10:00 and 10:15
    r = report.returns
    assert (r.start_equity, r.end_equity, r.total_pl) == (10_200, 10_150, -50)
    assert report.activity.fills == 1  # the sell; the buy before the range is not activity
    # the 10 A held at 10:00 count as bought there at 120: the sell of 5 @ 120 made 0 and
    # the 5 left lost (110 - 120) × 5 — together the range's equity change
    assert r.realized_pl == pytest.approx(0.0)
    assert r.unrealized_pl == pytest.approx(-50.0)
    assert r.realized_pl + r.unrealized_pl == pytest.approx(r.total_pl)
    start, end = report_range("2026-03-02", "2026-03-02")
    assert start == datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # midnight New York (EST)
    assert end == datetime(2026, 3, 3, 5, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        report_range("yesterday", None)


async def test_an_empty_or_reversed_range_says_so(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await fill_by_hand(settings)
    with pytest.raises(ConfigError, match="--since 2026-03-05 is after --until 2026-03-02"):
        report_range("2026-03-05", "2026-03-02")
    since, until = report_range("2026-03-09", "2026-03-10")
    console = Console(record=True, width=200)
    assert await run_report(settings, as_json=False, console=console, since=since,
                            until=until) == 0
    assert console.export_text().strip() == (
        "No cycles ran in the range asked (2026-03-09 to 2026-03-10, New York days). "
        "The stored sim history runs from 2026-03-02 09:30 ET to 2026-03-02 10:15 ET."
    )


def test_cli_rejects_a_reversed_range(tmp_path: Path) -> None:
    env = {**os.environ, "PERUN_STORAGE__PATH": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "perun_tui.cli", "report", "--since", "2026-03-05",
         "--until", "2026-03-02"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert out.returncode == 2
    assert "--since 2026-03-05 is after --until 2026-03-02" in out.stderr


async def test_the_running_report_covers_a_window_perun_report_everything(
    tmp_path: Path,
) -> None:
    """The daemon's periodic report (and the `o` screen) look back optimization.window_days
    from the newest snapshot, so its cost does not grow with a long history."""
    settings = settings_for(tmp_path, PERUN_OPTIMIZATION__WINDOW_DAYS="1")
    await fill_by_hand(settings)
    last = T0 + timedelta(minutes=45)
    async with await Memory.open(settings.database_path()) as memory:
        # a snapshot two days later: the first four fall out of a one-day window
        await memory.save_snapshot(5, last + timedelta(days=2),
                                   Account(cash=9_600, equity=10_150, buying_power=9_600), [],
                                   quotes(last + timedelta(days=2), A=110, B=55))
        windowed = await Optimizer(memory, settings).run()
        everything = await performance_report(memory, settings)
        settings.optimization.window_days = 0
        unbounded = await Optimizer(memory, settings).run()
    assert windowed is not None and unbounded is not None
    assert windowed.since == last + timedelta(days=1)
    assert windowed.period.snapshots == 1
    assert everything.period.snapshots == unbounded.period.snapshots == 5
