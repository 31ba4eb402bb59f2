"""Approval gate and order execution: signals become orders exactly once.

The rules this module keeps:

* Every status change of a signal is committed to memory *before* it is acted on and
  published after, so a crash can lose at most an action that never happened.
* An order intent (its deterministic ``client_order_id``) is committed in the same
  transaction as the signal's move to ``approved`` — before the broker is called. The
  id is derived from the signal, so approving twice, retrying, or restarting and
  reconciling can only ever name one order at the broker.
* A submission whose outcome is unknown (timeout, 5xx, dropped connection) is resolved
  by looking the order up by ``client_order_id``; it is never resubmitted blindly.
* Nothing is submitted (``ready`` stays False) until every order that was open locally
  at start-up has been checked at the broker; an order the broker could not be asked
  about keeps the gate shut, and :meth:`ExecutionService.check_open_orders` (each cycle)
  tries again.
* The broker's order-update stream is a fast path, not the only one: each cycle every
  open order older than ``POLL_AFTER_S`` is re-read over REST, so fills are recorded
  even while the stream is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from perun_tui.brokers.base import (
    Broker,
    BrokerError,
    BrokerRejected,
    BrokerRetryable,
    BrokerUnknownOutcome,
    price_increment,
)
from perun_tui.brokers.fills import gap_fill
from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import FillReceived, Level, LogEvent, OrderChanged, SignalChanged
from perun_tui.models import (
    Action,
    Fill,
    IllegalTransition,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Quote,
    Side,
    Signal,
    SignalStatus,
    SignalTransition,
    client_order_id_for,
)
from perun_tui.services.memory import Memory
from perun_tui.services.risk import RiskInputs, RiskPolicy, drift_pct, needs_human

log = logging.getLogger(__name__)

SUBMIT_ATTEMPTS = 4
RESOLVE_ATTEMPTS = 5
#: an open order untouched for this long (clock seconds) is re-read over REST each cycle:
#: fresher ones are left to the update stream, which is usually faster
POLL_AFTER_S = 5.0


class ExecutionService:
    def __init__(
        self,
        *,
        settings: Settings,
        broker: Broker,
        memory: Memory,
        bus: EventBus,
        policy: RiskPolicy,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.memory = memory
        self.bus = bus
        self.policy = policy
        self.now = now
        self._sleep = sleep or asyncio.sleep
        self._lock = asyncio.Lock()  # one approval/submission at a time
        self.pending: dict[str, Signal] = {}
        self.mode = settings.trading.mode
        self.halted = False
        self.ready = False  # set after reconciliation: nothing is submitted before
        self._unchecked = 0  # open orders the last reconciliation pass could not check
        self.risk_inputs: Callable[[str, Quote | None], RiskInputs] | None = None

    # ------------------------------------------------------------------ helpers

    async def _move(
        self,
        signal: Signal,
        new: SignalStatus,
        *,
        by: str,
        reason: str,
        order: Order | None = None,
    ) -> SignalTransition:
        """Commit a signal transition (and optionally an order) then publish it."""
        transition = signal.transition(new, by=by, reason=reason, at=self.now())
        await self._commit(signal, [(transition, signal.model_copy())], order)
        return transition

    async def _commit(
        self,
        signal: Signal,
        moves: list[tuple[SignalTransition, Signal]],
        order: Order | None = None,
    ) -> None:
        """Commit transitions already made on ``signal`` (each with the signal as it was
        right after it) and optionally an order, in one write; then publish them."""
        await self.memory.save_signal(signal, [t for t, _ in moves], order)
        if signal.status is SignalStatus.PENDING:
            self.pending[signal.id] = signal
        else:
            self.pending.pop(signal.id, None)
        for transition, as_then in moves:
            self.bus.publish(SignalChanged(signal=as_then, transition=transition))
        if order is not None:
            self.bus.publish(OrderChanged(order=order.model_copy()))

    def _log(self, level: Level, message: str) -> None:
        self.bus.publish(LogEvent(level=level, message=message, source="execution"))

    async def restore_pending(self) -> list[Signal]:
        """Pending signals from memory (after a restart), with their TTLs intact."""
        signals = await self.memory.pending_signals()
        self.pending = {s.id: s for s in signals}
        return signals

    # ------------------------------------------------------------------ the gate

    async def propose(self, signal: Signal, *, approved_by_risk: bool, reason: str) -> None:
        """Take a freshly sized signal through risk refusal or the approval gate."""
        async with self._lock:
            await self._propose(signal, approved_by_risk=approved_by_risk, reason=reason)

    async def _propose(self, signal: Signal, *, approved_by_risk: bool, reason: str) -> None:
        if not approved_by_risk:
            await self._move(signal, SignalStatus.REFUSED, by="risk", reason=reason)
            return
        ap = self.settings.approval
        if needs_human(ap.mode, signal.confidence, ap.auto_min_confidence):
            signal.expires_at = self.now() + timedelta(minutes=ap.ttl_minutes)
            why = (
                "waiting for approval"
                if ap.mode == "manual"
                else f"confidence {signal.confidence:.2f} < {ap.auto_min_confidence:.2f}"
            )
            await self._move(signal, SignalStatus.PENDING, by="gate", reason=why)
            return
        await self._approve_and_submit(signal, by="auto", reason=f"approval mode {ap.mode}")

    async def approve(self, signal_id: str, *, by: str = "user") -> str:
        """Approve a pending signal: re-check it against a fresh quote, then submit."""
        async with self._lock:
            signal = self.pending.get(signal_id) or await self.memory.get_signal(signal_id)
            if signal is None:
                return f"no signal {signal_id}"
            if signal.status is not SignalStatus.PENDING:
                return f"{signal.symbol}: already {signal.status.value}"
            if self.halted:
                return "halted: nothing is submitted until the halt is cleared"
            if not self.ready:
                await self._reconcile_pass()  # the broker may answer now
            now = self.now()
            if signal.expires_at is not None and now >= signal.expires_at:
                await self._move(signal, SignalStatus.EXPIRED, by="ttl", reason="TTL passed")
                return f"{signal.symbol}: expired before approval"
            quotes = await self.broker.latest([signal.symbol])
            quote = quotes.get(signal.symbol)
            if quote is None:
                await self._move(
                    signal, SignalStatus.EXPIRED, by="system", reason="no fresh quote at approval"
                )
                return f"{signal.symbol}: no fresh quote, signal expired"
            drift = drift_pct(signal.price, quote.last)
            limit = self.settings.approval.max_drift_pct
            if abs(drift) > limit:
                reason = f"price moved {drift:.2f}% since proposal (limit {limit:g}%)"
                await self._move(signal, SignalStatus.EXPIRED, by="system", reason=reason)
                return f"{signal.symbol}: expired — {reason}"
            return await self._approve_and_submit(signal, by=by, reason="approved", quote=quote)

    async def reject(
        self, signal_id: str, *, reason: str = "rejected by user", by: str = "user"
    ) -> str:
        async with self._lock:
            signal = self.pending.get(signal_id) or await self.memory.get_signal(signal_id)
            if signal is None:
                return f"no signal {signal_id}"
            if signal.status is not SignalStatus.PENDING:
                return f"{signal.symbol}: already {signal.status.value}"
            await self._move(signal, SignalStatus.REJECTED, by=by, reason=reason)
            return f"{signal.symbol}: rejected"

    async def supersede(self, newer: Signal) -> list[Signal]:
        """A newer pending idea on a symbol replaces the ones still waiting for it: the
        person decides on the latest price and reasoning, not on a pile of repeats."""
        async with self._lock:
            older = [
                s for s in self.pending.values()
                if s.symbol == newer.symbol and s.id != newer.id
                and s.status is SignalStatus.PENDING and s.created_at <= newer.created_at
            ]
            reason = (
                f"superseded by the newer {newer.action.value.upper()} {newer.symbol} "
                f"signal of cycle {newer.cycle}"
            )
            for signal in older:
                await self._move(signal, SignalStatus.EXPIRED, by="system", reason=reason)
            return older

    async def expire_due(self) -> int:
        """Expire pending signals whose TTL has passed."""
        now = self.now()
        due = [s for s in self.pending.values() if s.expires_at and now >= s.expires_at]
        if not due:
            return 0
        async with self._lock:
            for signal in due:
                if signal.status is SignalStatus.PENDING:
                    await self._move(signal, SignalStatus.EXPIRED, by="ttl", reason="TTL passed")
        return len(due)

    # ------------------------------------------------------------------ submission

    def _order_request(self, signal: Signal, quote: Quote | None) -> OrderRequest:
        trading = self.settings.trading
        cid = client_order_id_for(signal.id, self.mode)
        side = Side.BUY if signal.action is Action.BUY else Side.SELL
        otype = OrderType(trading.order_type)
        limit_price: float | None = None
        if otype is OrderType.LIMIT:
            ref = quote.last if quote else signal.price
            band = trading.limit_band_pct / 100 * (1 if side is Side.BUY else -1)
            limit_price = price_increment(ref * (1 + band))
        qty: float | None = signal.qty
        notional: float | None = None
        if trading.order_size == "notional" and side is Side.BUY:  # sells close by quantity
            price = quote.last if quote else signal.price
            qty, notional = None, round(signal.notional or signal.qty * price, 2)
        return OrderRequest(
            client_order_id=cid,
            symbol=signal.symbol,
            side=side,
            qty=qty,
            notional=notional,
            type=otype,
            limit_price=limit_price,
            signal_id=signal.id,
        )

    async def _approve_and_submit(
        self, signal: Signal, *, by: str, reason: str, quote: Quote | None = None
    ) -> str:
        if not self.ready:
            return (
                f"not ready: {self._unchecked} open order(s) could not be checked at the "
                "broker yet; nothing is submitted until they are"
            )
        if self.halted:
            if signal.status is SignalStatus.PROPOSED:
                await self._move(signal, SignalStatus.REFUSED, by="system", reason="halted")
            return "halted: nothing is submitted until the halt is cleared"
        # a fresh risk check with current account state: approval never bypasses limits
        if self.risk_inputs is not None and signal.status is SignalStatus.PENDING:
            inputs = self.risk_inputs(signal.symbol, quote)
            decision = self.policy.size(
                signal.action,
                signal.symbol,
                signal.confidence,
                signal.stop_loss,
                inputs,
                fractional=self.settings.trading.fractional,
            )
            if not decision.approved:
                await self._move(
                    signal,
                    SignalStatus.EXPIRED,
                    by="risk",
                    reason=f"no longer within risk limits: {decision.reason}",
                )
                return f"{signal.symbol}: refused by risk now — {decision.reason}"
            signal.qty = min(signal.qty, decision.qty) if signal.qty else decision.qty
            signal.notional = signal.qty * (quote.last if quote else signal.price)
            signal.risk_checks = decision.checks
        request = self._order_request(signal, quote)
        signal.client_order_id = request.client_order_id
        existing = await self.memory.get_order(request.client_order_id)
        order = existing or Order.from_request(request, self.now())
        await self._move(signal, SignalStatus.APPROVED, by=by, reason=reason, order=order)
        if existing is not None and existing.status is not OrderStatus.INTENT:
            return f"{signal.symbol}: order already exists ({existing.status.value})"
        return await self._submit(signal, request, order)

    async def _submit(
        self, signal: Signal, request: OrderRequest, order: Order, *, may_resubmit: bool = True
    ) -> str:
        last_error: BrokerError | None = None
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            if self.halted:
                # the kill switch fired while this order was being approved (or between
                # retries): once a halt is observed, nothing more goes to the broker
                return await self._finish_failed(
                    signal, order, "halted before it was sent", OrderStatus.FAILED
                )
            try:
                placed = await self.broker.submit(request)
            except asyncio.CancelledError:
                # stopped or halted with the call in flight: it may or may not have reached
                # the broker, so say so on disk; the lookup by client order id (next cycle,
                # or reconciliation at start) settles it
                order.status = OrderStatus.UNKNOWN
                order.reason = "interrupted while it was being sent"
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.memory.save_order(order))
                raise
            except BrokerRetryable as exc:
                last_error = exc
                self._log(Level.WARNING, f"{request.symbol}: {exc.message}; retry {attempt}")
                await self._sleep(min(exc.retry_after_s, 10.0))
                continue
            except BrokerUnknownOutcome as exc:
                self._log(
                    Level.WARNING,
                    f"{request.symbol}: outcome unknown ({exc.message}); "
                    f"looking the order up by {request.client_order_id}",
                )
                order.status = OrderStatus.UNKNOWN
                order.reason = exc.message
                await self.memory.save_order(order)
                self.bus.publish(OrderChanged(order=order.model_copy()))
                return await self.resolve_unknown(signal, order, may_resubmit=may_resubmit)
            except BrokerRejected as exc:
                if exc.status == 422 and "client_order_id" in exc.message:
                    # the order exists already (our earlier attempt got through)
                    return await self.resolve_unknown(signal, order, may_resubmit=False)
                return await self._finish_failed(
                    signal, order, f"broker rejected: {exc.message}", OrderStatus.REJECTED
                )
            except BrokerError as exc:
                return await self._finish_failed(signal, order, exc.message, OrderStatus.FAILED)
            await self._apply_order(placed, signal=signal)
            return f"{signal.symbol}: submitted {request.client_order_id}"
        message = last_error.message if last_error else "could not submit"
        return await self._finish_failed(
            signal,
            order,
            f"gave up after {SUBMIT_ATTEMPTS} attempts: {message}",
            OrderStatus.FAILED,
        )

    async def _finish_failed(
        self, signal: Signal | None, order: Order, reason: str, status: OrderStatus
    ) -> str:
        order.status = status
        order.reason = reason
        order.updated_at = self.now()
        if signal is not None and signal.can_move_to(SignalStatus.FAILED):
            await self._move(signal, SignalStatus.FAILED, by="broker", reason=reason, order=order)
        else:
            await self.memory.save_order(order)
            self.bus.publish(OrderChanged(order=order.model_copy()))
        self._log(Level.ERROR, f"{order.symbol}: {reason}")
        return f"{order.symbol}: {reason}"

    async def resolve_unknown(
        self,
        signal: Signal | None,
        order: Order,
        *,
        may_resubmit: bool = True,
        attempts: int = RESOLVE_ATTEMPTS,
    ) -> str:
        """Find out whether an order reached the broker, by client order id."""
        for attempt in range(attempts):
            try:
                found = await self.broker.order_by_client_id(order.client_order_id)
            except BrokerError as exc:
                self._log(Level.WARNING, f"lookup of {order.client_order_id} failed: {exc}")
                if attempt + 1 < attempts:
                    await self._sleep(min(2.0 * (attempt + 1), 10.0))
                continue
            if found is None:
                if may_resubmit and signal is not None and signal.status is SignalStatus.APPROVED:
                    # It never reached the broker. Sending it again under the same id is
                    # safe: the broker refuses a duplicate client order id.
                    order.status = OrderStatus.INTENT
                    return await self._submit(
                        signal, self._request_from_order(order), order, may_resubmit=False
                    )
                return await self._finish_failed(
                    signal,
                    order,
                    "not found at the broker: the order was never placed",
                    OrderStatus.FAILED,
                )
            await self._apply_order(found, signal=signal)
            return f"{order.symbol}: resolved {order.client_order_id} → {found.status.value}"
        return f"{order.symbol}: outcome still unknown for {order.client_order_id}; will retry"

    async def check_open_orders(self) -> None:
        """Each cycle: settle every local order that is not final yet.

        * before start-up reconciliation has checked every order: another pass of it —
          raises :class:`BrokerError` (the cycle fails visibly and backs off) while some
          order still cannot be checked, so nothing is submitted;
        * an ``intent`` or ``unknown`` order (a submission cut short, or one reconciliation
          could not check) is looked up by client order id — never sent again;
        * an order at the broker that has not changed for ``POLL_AFTER_S`` is re-read over
          REST and what the broker says is applied, fills included (recorded once: see
          ``_record_fill_gap``) — so a dead update stream cannot hide a fill; likewise an
          order whose filled quantity its stored fills do not cover yet.
        """
        async with self._lock:
            if not self.ready:
                await self._reconcile_pass()
                if not self.ready:
                    raise BrokerError(
                        f"start-up reconciliation is not finished: {self._unchecked} open "
                        "order(s) could not be checked at the broker; nothing is submitted "
                        "until they are"
                    )
                return  # the pass has just checked every open order
            now = self.now()
            for order in await self.memory.open_orders():
                if order.status in (OrderStatus.INTENT, OrderStatus.UNKNOWN):
                    signal = (
                        await self.memory.get_signal(order.signal_id) if order.signal_id else None
                    )
                    await self.resolve_unknown(signal, order, may_resubmit=False, attempts=1)
                    continue
                touched = order.updated_at or order.created_at
                if touched is not None and (now - touched).total_seconds() < POLL_AFTER_S:
                    continue
                try:
                    remote = await self.broker.order_by_client_id(order.client_order_id)
                except BrokerError as exc:
                    self._log(
                        Level.WARNING,
                        f"{order.symbol}: could not re-read {order.client_order_id}: {exc}",
                    )
                    continue
                if remote is None:
                    self._log(
                        Level.WARNING,
                        f"{order.symbol}: {order.client_order_id} is {order.status.value} here "
                        "but the broker does not know it",
                    )
                    continue
                await self._apply_remote(remote)
            # an order the broker filled in its answer to the submission (or a REST read)
            # whose fill no stream event brought: recorded from its filled quantity
            for order in await self.memory.orders_missing_fills():
                touched = order.updated_at or order.created_at
                if touched is None or (now - touched).total_seconds() >= POLL_AFTER_S:
                    await self._record_fill_gap(order)

    async def _apply_remote(self, remote: Order, signal: Signal | None = None) -> None:
        """Apply a REST view of an order, and the fills it implies that no stream event
        brought (the gap is recorded once, whichever of stream and REST comes first)."""
        await self._apply_order(remote, signal=signal)
        local = await self.memory.get_order(remote.client_order_id)
        if local is not None:
            await self._record_fill_gap(local)

    @staticmethod
    def _request_from_order(order: Order) -> OrderRequest:
        return OrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            notional=order.notional,
            type=order.type,
            limit_price=order.limit_price,
            signal_id=order.signal_id,
        )

    # ------------------------------------------------------------------ tracking

    async def _apply_order(
        self, remote: Order, *, signal: Signal | None = None, fill: Fill | None = None
    ) -> None:
        """Merge the broker's view of an order into ours and move its signal along."""
        local = await self.memory.get_order(remote.client_order_id)
        known = local is not None
        if local is None:
            local = remote.model_copy()
            local.external = remote.signal_id is None and not remote.client_order_id.startswith(
                f"perun-{self.mode}-"
            )
        if local.status is not remote.status and not local.can_move_to(remote.status):
            log.debug("ignoring stale update %s → %s", local.status, remote.status)
            if fill is not None:  # a fill reported late is still a fill
                await self._store_fill(fill, max(local.filled_qty, remote.filled_qty))
            return
        before = (local.status, local.filled_qty, local.filled_avg_price, local.broker_order_id)
        # an unknown outcome settled by the broker: the error that made it unknown is stale
        settled = local.status is OrderStatus.UNKNOWN and remote.status is not local.status
        local.status = remote.status
        local.broker_order_id = remote.broker_order_id or local.broker_order_id
        local.filled_qty = max(local.filled_qty, remote.filled_qty)
        local.filled_avg_price = remote.filled_avg_price or local.filled_avg_price
        local.reason = remote.reason or (
            "confirmed at the broker after an unknown outcome" if settled else local.reason
        )
        local.updated_at = self.now()
        if fill is not None:
            await self._store_fill(fill, local.filled_qty)
        if signal is None and local.signal_id:
            signal = await self.memory.get_signal(local.signal_id)
        target = _signal_status_for(local.status)
        if signal is not None and target is not None and signal.status is not target:
            moves: list[tuple[SignalTransition, Signal]] = []
            if signal.status is SignalStatus.APPROVED and target is not SignalStatus.SUBMITTED:
                # pass through submitted so the history shows the order reached the broker
                # (committed with the move after it and the order: one write)
                why = f"order {local.broker_order_id or ''} accepted"
                passed = signal.transition(
                    SignalStatus.SUBMITTED, by="broker", reason=why, at=self.now()
                )
                moves.append((passed, signal.model_copy()))
            if signal.can_move_to(target):
                signal.fill_price = local.filled_avg_price
                why = _order_reason(local)
                moved = signal.transition(target, by="broker", reason=why, at=self.now())
                moves.append((moved, signal.model_copy()))
            if moves:
                await self._commit(signal, moves, order=local)
                return
        after = (local.status, local.filled_qty, local.filled_avg_price, local.broker_order_id)
        if known and after == before:
            return  # the same news again (the submit reply, then the stream): said once
        await self.memory.save_order(local)
        self.bus.publish(OrderChanged(order=local.model_copy()))

    async def _store_fill(self, fill: Fill, order_filled: float) -> None:
        part = await self._unrecorded_part(fill, order_filled)
        if part is not None and await self.memory.save_fill(part):
            self.bus.publish(FillReceived(fill=part))

    async def _unrecorded_part(self, fill: Fill, order_filled: float) -> Fill | None:
        """The part of a reported fill that is not stored yet.

        The same execution can be reported twice under different ids — by the stream and
        by a REST re-read, or once before a crash and again as a gap after it. The stored
        fills of an order never add up to more than the quantity the broker says is filled.
        """
        stored = await self.memory.fills(client_order_id=fill.client_order_id)
        if any(f.fill_id == fill.fill_id for f in stored):
            return fill  # stored already: save_fill ignores it
        room = round(order_filled - sum(f.qty for f in stored), 9)
        if room <= 1e-9:
            log.debug("fill %s already covered by stored fills", fill.fill_id)
            return None
        return fill if fill.qty <= room + 1e-9 else fill.model_copy(update={"qty": room})

    async def _record_fill_gap(self, order: Order) -> None:
        """Fills that happened while Perun was not running (or was killed before it stored
        them) are not replayed by the broker: record the difference between the order's
        filled quantity and its stored fills as one fill, at the implied average price."""
        if order.filled_qty <= 0 or not order.filled_avg_price:
            return
        stored = await self.memory.fills(client_order_id=order.client_order_id)
        fill = gap_fill(
            order,
            recorded_qty=sum(f.qty for f in stored),
            recorded_value=sum(f.qty * f.price for f in stored),
            id_prefix="gap",
            at=self.now(),
        )
        if fill is None:
            return
        if await self.memory.save_fill(fill):
            self.bus.publish(FillReceived(fill=fill))
            self._log(
                Level.INFO,
                f"{order.symbol}: recorded {fill.qty:g} filled while Perun was not running "
                f"({order.client_order_id})",
            )

    async def on_update(self, update: OrderUpdate) -> None:
        async with self._lock:
            await self._apply_order(update.order, fill=update.fill)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self) -> list[str]:
        """Match local open orders with the broker's before anything may be submitted.

        ``ready`` turns True only when every local order that is not final has been
        checked at the broker. One that could not be checked (the broker did not answer)
        is said as a warning and keeps the gate shut; ``check_open_orders`` tries again
        each cycle, and approvals wait for it too."""
        async with self._lock:
            return await self._reconcile_pass()

    async def _reconcile_pass(self) -> list[str]:
        notes: list[str] = []
        unchecked: list[str] = []
        for order in await self.memory.open_orders():
            try:
                remote = await self.broker.order_by_client_id(order.client_order_id)
            except BrokerError as exc:
                unchecked.append(order.client_order_id)
                self._log(
                    Level.WARNING,
                    f"reconcile: could not check {order.symbol} {order.client_order_id} "
                    f"({order.status.value}) at the broker: {exc} — nothing is submitted "
                    "until it is checked; retrying",
                )
                continue
            signal = await self.memory.get_signal(order.signal_id) if order.signal_id else None
            if remote is None:
                if order.status in (OrderStatus.INTENT, OrderStatus.UNKNOWN):
                    await self._finish_failed(
                        signal,
                        order,
                        "never reached the broker (Perun stopped before submitting)",
                        OrderStatus.FAILED,
                    )
                    notes.append(f"{order.client_order_id}: never placed → failed")
                continue
            await self._apply_order(remote, signal=signal)
            notes.append(f"{order.client_order_id}: {remote.status.value}")
        # broker orders we do not know: shown as external, never adopted silently
        try:
            remote_open = await self.broker.open_orders()
        except BrokerError as exc:
            remote_open = []
            self._log(Level.WARNING, f"reconcile: could not list open orders: {exc}")
        for remote in remote_open:
            if await self.memory.get_order(remote.client_order_id) is None:
                ext = remote.model_copy(update={"external": True})
                await self.memory.save_order(ext)
                self.bus.publish(OrderChanged(order=ext))
                notes.append(f"external order {remote.client_order_id} ({remote.symbol})")
        # fills the broker reported while nobody was listening
        for order in await self.memory.orders_missing_fills():
            await self._record_fill_gap(order)
        # approved signals whose intent never got an order row: fail them visibly
        for signal in await self.memory.signals([SignalStatus.APPROVED]):
            cid = signal.client_order_id or client_order_id_for(signal.id, self.mode)
            if await self.memory.get_order(cid) is None:
                await self._move(
                    signal,
                    SignalStatus.FAILED,
                    by="system",
                    reason="approved but no order intent was recorded",
                )
        if not unchecked and self._unchecked:
            self._log(Level.INFO, "reconcile: every open order is checked; trading may begin")
        self._unchecked = len(unchecked)
        self.ready = not unchecked
        return notes


def _signal_status_for(status: OrderStatus) -> SignalStatus | None:
    return {
        OrderStatus.NEW: SignalStatus.SUBMITTED,
        OrderStatus.PARTIALLY_FILLED: SignalStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED: SignalStatus.FILLED,
        OrderStatus.CANCELED: SignalStatus.CANCELED,
        OrderStatus.EXPIRED: SignalStatus.CANCELED,
        OrderStatus.REJECTED: SignalStatus.FAILED,
        OrderStatus.FAILED: SignalStatus.FAILED,
    }.get(status)


def _order_reason(order: Order) -> str:
    if order.status is OrderStatus.FILLED:
        return f"filled {order.filled_qty:g} @ {order.filled_avg_price or 0:.2f}"
    if order.status is OrderStatus.PARTIALLY_FILLED:
        return f"partially filled {order.filled_qty:g} @ {order.filled_avg_price or 0:.2f}"
    return order.reason or order.status.value


__all__ = ["ExecutionService", "IllegalTransition"]
