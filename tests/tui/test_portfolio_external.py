"""The portfolio panel says which open orders were placed outside Perun."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Static

from perun_tui.events import PortfolioUpdated
from perun_tui.models import Account, Order, OrderStatus, Side
from perun_tui.tui.widgets.portfolio import PortfolioPanel


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield PortfolioPanel(id="portfolio")


async def test_external_open_orders_are_labelled() -> None:
    own = Order(client_order_id="perun-paper-s1-AAPL-buy-abc123", symbol="AAPL", side=Side.BUY,
                qty=5, status=OrderStatus.NEW)
    other = Order(client_order_id="from-the-dashboard", symbol="MSFT", side=Side.SELL, qty=2,
                  status=OrderStatus.NEW, external=True)
    app = _Host()
    async with app.run_test(size=(140, 20)) as pilot:
        panel = app.query_one(PortfolioPanel)
        panel.update_portfolio(
            PortfolioUpdated(
                account=Account(cash=1000, equity=1000, buying_power=1000),
                positions=[],
                open_orders=[own, other],
            )
        )
        await pilot.pause()
        text = str(app.query_one("#orders", Static).content)
    assert "BUY AAPL 5 new ·" in text  # Perun's own: no label
    assert "SELL MSFT 2 new external" in text
