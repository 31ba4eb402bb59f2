"""What keeps the layout honest: the import-linter contract that keeps Textual out of the
core names every module outside ``perun_tui.tui`` (a module missing from its list is not
checked at all), and README documents every setting."""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel

import perun_tui
from perun_tui.config import Settings

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


def test_readme_documents_every_setting() -> None:
    """README's configuration table names every key of the settings model (`a.b`, or
    grouped as `a.b` / `c`)."""
    readme = (REPO / "README.md").read_text("utf-8")
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key in model.model_fields:
            grouped = rf"`{section}\.[a-z_]+`[^|\n]*`({section}\.)?{key}`"
            if f"`{section}.{key}`" not in readme and not re.search(grouped, readme):
                missing.append(f"{section}.{key}")
    assert missing == [], "add these to README's configuration table"
