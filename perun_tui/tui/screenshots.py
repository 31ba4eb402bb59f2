"""Write the SVG screenshots in ``screenshots/`` from the real app.

    python -m perun_tui.tui.screenshots               # scripted data, same as the snapshots
    python -m perun_tui.tui.screenshots --sim 20      # also: 20 s of a real sim daemon

The scripted run uses the demo daemon (fixed data, frozen clock), so the pictures only
change when the screen does. ``--sim`` runs the real daemon in sim mode with the rules
analyst in a temporary data directory and captures whatever it shows after N seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from perun_tui.config import Settings
from perun_tui.tui.app import PerunApp, real_runtime
from perun_tui.tui.demo import DemoDaemon, demo_settings, stage, wait_for
from perun_tui.tui.screens.confirm import ConfirmModal
from perun_tui.tui.screens.details import SignalDetailsModal
from perun_tui.tui.screens.help import HelpScreen

SHOTS: tuple[tuple[str, tuple[int, int], tuple[str, ...], type | None], ...] = (
    ("main-120x40", (120, 40), (), None),
    ("main-80x24", (80, 24), (), None),
    ("details", (120, 40), ("enter",), SignalDetailsModal),
    ("help", (120, 40), ("question_mark",), HelpScreen),
    ("halt-confirm", (120, 40), ("k",), ConfirmModal),
)


def _showing(app: PerunApp, screen_type: type) -> Callable[[], bool]:
    return lambda: isinstance(app.screen, screen_type)


async def scripted(out: Path) -> list[Path]:
    written: list[Path] = []
    for name, size, keys, modal in SHOTS:
        settings = demo_settings()
        daemon = DemoDaemon(settings)
        app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
        async with app.run_test(size=size) as pilot:
            await stage(app, daemon)
            if keys:
                await pilot.press(*keys)
            if modal is not None:
                await wait_for(_showing(app, modal))
            await pilot.pause()
            path = out / f"{name}.svg"
            path.write_text(app.export_screenshot(title="Perun"), encoding="utf-8")
            written.append(path)
    return written


async def live_sim(out: Path, seconds: float) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate(
            {"storage": {"path": tmp}, "llm": {"provider": "rules"}, "notify": {"bell": False}}
        )
        app = PerunApp(settings, runtime_factory=real_runtime())
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(seconds)
            path = out / "main-sim-120x40.svg"
            path.write_text(app.export_screenshot(title="Perun"), encoding="utf-8")
            await pilot.press("q")
            await wait_for(lambda: app._exit, within=20)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", default="screenshots", help="directory for the SVGs")
    parser.add_argument("--sim", type=float, metavar="SECONDS",
                        help="also capture a real sim daemon after SECONDS")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = asyncio.run(scripted(out))
    if args.sim:
        written.append(asyncio.run(live_sim(out, args.sim)))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
