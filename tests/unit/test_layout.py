"""The import-linter contract that keeps Textual out of the core must name every module
outside ``perun_tui.tui``: a module missing from its list is not checked at all."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import perun_tui

REPO = Path(__file__).resolve().parents[2]


def test_the_textual_contract_covers_every_core_module() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    textual = next(c for c in contracts if c.get("forbidden_modules") == ["textual"])
    listed = set(textual["source_modules"])
    modules = {
        f"perun_tui.{m.name}"
        for m in pkgutil.iter_modules(perun_tui.__path__)
        if m.name not in ("tui", "__main__")
    }
    assert modules - listed == set(), "add these to the contract in pyproject.toml"
    assert listed - modules == set(), "these no longer exist"
