"""One trading Perun per database: an exclusive OS lock held next to it.

Two processes trading on one database would each take the other's orders, pending
signals and simulated exchange for their own and overwrite them. `perun run` and the
terminal UI therefore hold ``flock(LOCK_EX)`` on ``<database>.lock`` for as long as they
run (``runtime.build_runtime`` takes it, ``Runtime.close`` gives it back). The kernel drops
the lock when the process ends, however it ends — ``kill -9`` included — so a lock file
left behind never blocks a start; only a live holder does. The one-shot commands
(`perun halt`, `resume`, `doctor`, `report`) do not take it: they are meant to act on a
database a running Perun is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunning", "InstanceLock", "lock_path"]


class AlreadyRunning(Exception):
    """Another Perun holds the database; ``str()`` says which and what to do."""

    exit_code = 1

    def __init__(self, database: Path, pid: int | None) -> None:
        self.database = database
        self.pid = pid
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"another Perun is running on {database} ({who}) — use `perun halt` to stop it "
            "trading, or stop it first"
        )


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class InstanceLock:
    """``InstanceLock.acquire(db)`` or :class:`AlreadyRunning`; ``release()`` when done."""

    def __init__(self, database: Path, fd: int) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path | str) -> InstanceLock:
        db = Path(database).expanduser()
        path = lock_path(db)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # not inherited by child processes (os.open's default): only this one holds it
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            from perun_tui.services.memory import StorageError  # (cheap import for the cli)

            raise StorageError(
                f"cannot create the lock file {path}: {exc.strerror}; set storage.path in "
                "perun.toml to a writable directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(db, pid) from None
        except BaseException:
            os.close(fd)
            raise
        # who holds it, for the message a second start prints
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(db, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock back; safe to call twice. (Exiting the process does it too.)"""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
