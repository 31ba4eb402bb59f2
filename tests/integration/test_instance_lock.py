"""One trading Perun per database: a second start is refused, the one-shot commands are
not, and a ``kill -9`` does not leave the database locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from perun_tui.runtime import build_runtime
from perun_tui.services.instance_lock import AlreadyRunning, lock_path
from tests.faults.harness import Child
from tests.integration.test_crash_safety import _sim_settings
from tests.sim import SIM_START


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERUN_", "APCA_"))}
    env.update(
        {
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
            "PERUN_STORAGE__PATH": str(root / "data"),
            "PERUN_SIM__START": SIM_START,
            "PERUN_LLM__PROVIDER": "rules",
            "PERUN_NOTIFY__BELL": "false",
        }
    )
    return env


def _perun(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perun_tui.cli", *args],
        env=_env(root), cwd=root, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.timeout(120)
def test_a_second_perun_on_the_same_database_is_refused(tmp_path: Path) -> None:
    first = Child(["run", "--headless", "--json", "--every", "200ms"], _env(tmp_path), tmp_path)
    try:
        assert first.wait_events("CycleFinished", 1, 60), first.stderr[-10:]
        db = tmp_path / "data" / "perun-sim.db"

        second = _perun(tmp_path, "run", "--headless", "--cycles", "1")
        assert second.returncode == 1
        assert (
            f"another Perun is running on {db} (pid {first.proc.pid}) — use `perun halt` to "
            "stop it trading, or stop it first"
        ) in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == ""  # refused before anything ran

        # the one-shot commands act on the database a running Perun uses
        for args in (("halt", "lock test"), ("resume",), ("doctor",), ("report",)):
            done = _perun(tmp_path, *args)
            assert done.returncode == 0, (args, done.stdout[-500:], done.stderr[-500:])
        assert first.alive()
    finally:
        first.send(signal.SIGKILL)  # the kernel releases the lock with the process
        first.finish()
    assert lock_path(tmp_path / "data" / "perun-sim.db").exists()  # left behind, unlocked
    again = _perun(tmp_path, "run", "--headless", "--cycles", "1")
    assert again.returncode == 0, again.stderr[-1000:]


async def test_the_runtime_holds_the_lock_until_it_is_closed(tmp_path: Path) -> None:
    settings_ = _sim_settings(tmp_path)
    runtime = await build_runtime(settings_, every_s=3600, max_cycles=1)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            await build_runtime(settings_, every_s=3600, max_cycles=1)
        assert refused.value.pid == os.getpid()
        assert AlreadyRunning.exit_code == 1
    finally:
        await runtime.close()
    again = await build_runtime(settings_, every_s=3600, max_cycles=1)
    await again.close()
