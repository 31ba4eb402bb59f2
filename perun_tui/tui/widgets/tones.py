"""Theme colours for text inside tables and logs, where TCSS cannot reach.

Cells of a ``DataTable`` and lines of a ``RichLog`` are Rich renderables, so colour has to
be given as a style string. Reading it from the active theme's variables keeps the panels
in step with ``$success``/``$error``/``$warning`` used everywhere else.
"""

from __future__ import annotations

from textual.dom import DOMNode

_FALLBACK = {
    "success": "green",
    "error": "red",
    "warning": "yellow",
    "accent": "cyan",
    "primary": "blue",
    "secondary": "magenta",
    "text-muted": "grey50",
    "foreground": "default",
}


def tone(node: DOMNode, name: str) -> str:
    """A Rich style string for a theme variable (``""`` for none)."""
    if not name:
        return ""
    try:
        variables = node.app.theme_variables
    except Exception:  # not mounted yet
        variables = {}
    value = variables.get(name) or _FALLBACK.get(name, "")
    # theme variables may carry alpha ("#rrggbbaa") or be "auto ..."; keep plain colours
    if value.startswith("#") and len(value) == 9:
        value = value[:7]
    if " " in value:
        value = _FALLBACK.get(name, "")
    return value


def sign_tone(node: DOMNode, x: float) -> str:
    """Success for a gain, error for a loss, none for zero."""
    return tone(node, "success" if x > 0 else "error" if x < 0 else "")
