"""Issue 5's "Done means", run the way a user runs it.

The real ``perun`` command (``perun run --headless --mode paper --cycles 3 --every 3s``,
auto approval, the rules analyst) against the loopback FakeAlpaca through the three URL
settings, with the real alpaca-py clients in between — without faults, and with faults
on order submission (504 after the order was created; connections dropped before and
after). Each run must place orders under Perun's client order ids, see them filled, show
the positions, and leave exactly one order per client order id at the broker.

The three runs go in parallel (each is mostly waiting for its next cycle).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.alpaca_server import DEFAULT_PRICES, FakeAlpaca

KEY, SECRET = "PKDONEMEANS01", "done-means-secret-0001"
SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY"]  # trading.symbols' default
COMMAND = ["run", "--headless", "--mode", "paper", "--cycles", "3", "--every", "3s"]
REPO = Path(__file__).resolve().parents[2]


def perun_env(home: Path, srv: FakeAlpaca, *, key: str = KEY, secret: str = SECRET) -> dict[
    str, str
]:
    """A clean environment: nothing from the developer's config, data or keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PERUN_", "APCA_", "OLLAMA_", "TRADING_", "MARKET_OPEN"))
    }
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "share"),
        PERUN_STORAGE__PATH=str(home / "data"),
        PERUN_APPROVAL__MODE="auto",
        PERUN_LLM__PROVIDER="rules",
        PERUN_ALPACA__TRADING_URL=srv.trading_url,
        PERUN_ALPACA__DATA_URL=srv.data_url,
        PERUN_ALPACA__STREAM_URL=srv.stream_url,
        APCA_API_KEY_ID=key,
        APCA_API_SECRET_KEY=secret,
        COLUMNS="200",
        PYTHONPATH=str(REPO),
    )
    return env


def perun(home: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "perun_tui.cli", *args],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Run:
    name: str
    faults: list[str]
    srv: FakeAlpaca
    home: Path
    proc: subprocess.Popen[str] | None = None
    out: str = ""
    err: str = ""


@pytest.mark.timeout(90)
def test_done_means_paper_run_fills_orders_once_each(tmp_path: Path) -> None:
    plans = {
        "clean": [],
        "504": ["504_after_create"],  # created, then a gateway timeout: unknown → looked up
        # nothing created, then created with the reply lost: looked up, sent once more
        # under the same id, looked up again
        "drops": ["drop_before_create", "drop_after_create"],
    }
    runs = [
        Run(name, faults, FakeAlpaca(KEY, SECRET, prices={s: DEFAULT_PRICES[s] for s in SYMBOLS}),
            tmp_path / name)
        for name, faults in plans.items()
    ]
    try:
        for run in runs:
            run.srv.start()
            run.srv.faults.submit = list(run.faults)
            run.proc = perun(run.home, perun_env(run.home, run.srv), *COMMAND)
        for run in runs:
            assert run.proc is not None
            run.out, run.err = run.proc.communicate(timeout=75)
            assert run.proc.returncode == 0, f"{run.name}: {run.out[-3000:]}\n{run.err[-3000:]}"
        for run in runs:
            check_run(run)
    finally:
        for run in runs:
            if run.proc is not None and run.proc.poll() is None:
                run.proc.kill()
            run.srv.stop()


def check_run(run: Run) -> None:
    srv, out = run.srv, run.out
    where = f"{run.name} run:\n{out[-4000:]}"
    by_cid = srv.orders_by_client_id()
    assert by_cid, f"no order reached the broker; {where}"
    assert srv.faults.submit == [], f"faults not hit: {srv.faults.submit}; {where}"
    # exactly one order per client order id, each one Perun's, each filled
    assert all(len(orders) == 1 for orders in by_cid.values()), by_cid
    for cid, [order] in by_cid.items():
        assert cid.startswith("perun-paper-"), cid
        assert order["status"] == "filled", (cid, order["status"], where)
        # and Perun tracked it to filled, under the same id
        assert re.search(
            rf"order BUY {order['symbol']} \S+ filled @ [\d.]+ \[{re.escape(cid)}\]",
            out,
        ), f"{cid} not shown filled; {where}"
    # reconciliation is shown, and over, before the first order goes out
    states = re.findall(r"^state (\w+)", out, re.MULTILINE)
    assert states[:3] == ["starting", "reconciling", "waiting"], states
    assert out.index("state reconciling") < out.index("state waiting") < out.index("order BUY")
    attempts = sum(srv.submit_attempts[cid] for cid in by_cid)
    if run.name == "clean":
        assert attempts == len(by_cid)
        assert "outcome unknown" not in out
    else:
        assert "outcome unknown" in out, where
        assert attempts == len(by_cid) + (1 if run.name == "drops" else 0)
    # the positions are shown at the end, as the broker holds them
    held = srv.positions()
    assert held, where
    for symbol, qty in held.items():
        assert re.search(rf"^  {symbol} {qty:g} @ [\d.]+ → ", out, re.MULTILINE), where
    assert f"positions {len(held)} open orders 0" in out, where
    # Perun's own record: every order filled, once; a fill for each
    db = sqlite3.connect(run.home / "data" / "perun-paper.db")
    try:
        rows = db.execute("SELECT client_order_id, status, filled_qty FROM orders").fetchall()
        fills = db.execute("SELECT client_order_id, SUM(qty) FROM fills GROUP BY 1").fetchall()
    finally:
        db.close()
    assert {cid: status for cid, status, _ in rows} == dict.fromkeys(by_cid, "filled")
    assert dict(fills) == {cid: float(o[0]["filled_qty"]) for cid, o in by_cid.items()}
    for cid, _, filled in rows:
        assert filled == float(by_cid[cid][0]["filled_qty"])


@pytest.mark.timeout(60)
def test_bad_or_missing_keys_stop_start_up_with_exit_2_before_the_database(
    tmp_path: Path,
) -> None:
    with FakeAlpaca(KEY, SECRET, prices={"AAPL": 231.4}) as srv:
        refused_env = perun_env(tmp_path / "refused", srv, secret="not-the-right-secret")
        missing_env = perun_env(tmp_path / "missing", srv, key="", secret="")
        refused = perun(tmp_path / "refused", refused_env, *COMMAND)
        missing = perun(tmp_path / "missing", missing_env, *COMMAND)
        out_r, err_r = refused.communicate(timeout=45)
        out_m, err_m = missing.communicate(timeout=45)
        assert srv.requests("POST", "/v2/orders") == []
    assert refused.returncode == 2, out_r + err_r
    assert "rejected the API keys for paper mode" in err_r
    assert "not-the-right-secret" not in out_r + err_r
    assert missing.returncode == 2, out_m + err_m
    assert "APCA_API_KEY_ID and APCA_API_SECRET_KEY" in err_m
    for err in (err_r, err_m):
        assert "Traceback" not in err and err.count("\n") <= 3
    assert not (tmp_path / "refused" / "data").exists()  # nothing opened, nothing written
    assert not (tmp_path / "missing" / "data").exists()


@pytest.mark.timeout(60)
def test_doctor_paper_one_keys_row_and_the_stream(tmp_path: Path) -> None:
    with FakeAlpaca(KEY, SECRET, prices={s: DEFAULT_PRICES[s] for s in SYMBOLS}) as srv:
        doctor = ["doctor", "--mode", "paper"]
        ok = perun(tmp_path / "ok", perun_env(tmp_path / "ok", srv), *doctor)
        out, _ = ok.communicate(timeout=45)
        srv.stream_reject_auth = True
        down = perun(tmp_path / "down", perun_env(tmp_path / "down", srv), *doctor)
        out_down, _ = down.communicate(timeout=45)
    assert out.count("alpaca keys") == 1, out  # one row, from the broker's checks
    assert "PK…01" in out and KEY not in out and SECRET not in out
    stream = next(line for line in out.splitlines() if "alpaca stream" in line)
    assert "OK" in stream and "connected and authorized" in stream, out
    stream = next(line for line in out_down.splitlines() if "alpaca stream" in line)
    assert "problem" in stream and "refused the keys" in stream, out_down
    assert down.returncode == 1


@pytest.mark.timeout(90)
def test_live_headless_needs_both_opt_ins_and_keeps_its_own_database(tmp_path: Path) -> None:
    """Issue 5's live guard, headless: ``trading.live_confirm = true`` in the config *and*
    ``--confirm-live`` on the command line; either one missing stops start-up (exit 2)
    before anything is sent or written. With both, the run trades in ``perun-live.db``,
    never in the paper database."""
    live = ["run", "--headless", "--mode", "live", "--cycles", "1", "--every", "1s"]
    with FakeAlpaca(KEY, SECRET, prices={s: DEFAULT_PRICES[s] for s in SYMBOLS}) as srv:
        confirmed = {"PERUN_TRADING__LIVE_CONFIRM": "true"}
        no_flag = perun(tmp_path / "no-flag", {**perun_env(tmp_path / "no-flag", srv),
                                               **confirmed}, *live)
        no_config = perun(tmp_path / "no-config", perun_env(tmp_path / "no-config", srv),
                          *live, "--confirm-live")
        out_f, err_f = no_flag.communicate(timeout=45)
        out_c, err_c = no_config.communicate(timeout=45)
        assert srv.requests() == [], "refused before anything reached the broker"
        both = perun(tmp_path / "both", {**perun_env(tmp_path / "both", srv), **confirmed},
                     *live, "--confirm-live")
        out_b, err_b = both.communicate(timeout=75)
        assert srv.requests("GET", "/v2/account"), "the confirmed live run used the broker"
    assert no_flag.returncode == 2, out_f + err_f
    assert "live trading headless needs --confirm-live" in err_f
    assert no_config.returncode == 2, out_c + err_c
    assert "trading.live_confirm" in err_c
    for err in (err_f, err_c):
        assert "Traceback" not in err
    assert not (tmp_path / "no-flag" / "data").exists()
    assert not (tmp_path / "no-config" / "data").exists()
    assert both.returncode == 0, out_b[-3000:] + err_b[-3000:]
    assert "cycle 1 done" in out_b, out_b[-3000:]
    data = tmp_path / "both" / "data"
    assert (data / "perun-live.db").exists()
    assert not (data / "perun-paper.db").exists() and not (data / "perun-sim.db").exists()
