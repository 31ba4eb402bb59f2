"""Command palette (ctrl+p): the main screen's actions, by name.

Only actions available right now are offered — the same rule that greys keys out in
the footer — so the palette can never do what a key could not.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from perun_tui.tui.screens.main import MainScreen


class PerunCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str]]:
        screen = self.screen
        if not isinstance(screen, MainScreen):
            return []
        return screen.palette_commands()

    async def discover(self) -> Hits:
        screen = self.screen
        for name, help_text, action in self._commands():
            yield DiscoveryHit(name, partial(screen.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        screen = self.screen
        matcher = self.matcher(query)
        for name, help_text, action in self._commands():
            score = max(matcher.match(name), matcher.match(help_text) * 0.5)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(name),
                    partial(screen.run_action, action),
                    text=name,
                    help=help_text,
                )
