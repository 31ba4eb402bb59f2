"""`perun` (the console script) and `python -m perun_tui`: the CLI, loaded without the
garbage collector's passes.

Start-up makes a few hundred thousand long-lived objects (pydantic's validators, Textual's
CSS and widgets) and the collector would walk them over and over while they are being
made: about a tenth of the time to the first frame. It is off while the modules load and
on again before anything runs; the terminal then moves what start-up made out of its
sight (``gc.freeze``, in the app).
"""

from __future__ import annotations

import gc
import sys


def main() -> int:
    gc.disable()
    try:
        from perun_tui import cli

        if cli.opens_terminal(sys.argv[1:]):
            import perun_tui.tui.app  # noqa: F401  (loaded here, with the rest)
    finally:
        gc.enable()
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
