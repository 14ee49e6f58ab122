"""Kill switch. One row in the journal database says whether new orders may go out:

* ``normal``       everything allowed
* ``halt``         no new orders; a running daemon (or ``runner halt --cancel-now``) cancels open ones on
                   every account, journaled and verified (:mod:`runner.daemon.halt_pass`)
* ``reduce_only``  only orders that shrink an existing position (``runner halt --reduce-only``)

``runner halt`` / ``runner resume`` write the row; daemons poll it (:class:`ControlWatcher`, every 0.25 s)
and every order passes :class:`GuardedBroker`, which consults the latest state before ``place``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.brokers.base import Broker, ForwardingBroker
from runner.errors import Rejected
from runner.journal.db import ScrubbedText, UTCDateTime, create_all
from runner.journal.fires import enum_type, read
from runner.journal.health import PROCESS, JournalHealth
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    Order,
    OrderRequest,
    Product,
    Side,
)

log = logging.getLogger("runner.control")


class Mode(enum.StrEnum):
    NORMAL = "normal"
    HALT = "halt"
    REDUCE_ONLY = "reduce_only"


class Halted(Rejected):
    """Refused by the runner's kill switch; nothing was sent to the broker."""

    def __init__(self, message: str, mode: Mode) -> None:
        super().__init__(message, code=mode.value, broker="runner")
        self.mode = mode


metadata = sa.MetaData()
control = sa.Table(
    "control",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one switch per journal
    sa.Column("halted", sa.Boolean, nullable=False),
    sa.Column("mode", enum_type(Mode), nullable=False),
    sa.Column("reason", ScrubbedText(), nullable=True),
    sa.Column("since", UTCDateTime(), nullable=False),
    sa.Column("by", sa.String(128), nullable=True),
    # Who published the alert for the change at ``since`` (NULL: nobody yet). One change, one alert across
    # processes: `runner halt --alerts` writes itself here with the change; a daemon claims it otherwise.
    sa.Column("alerted_by", sa.String(128), nullable=True),
)


# One row per account per halt cancel pass (:mod:`runner.daemon.halt_pass`): what ``runner status`` shows.
halt_passes = sa.Table(
    "halt_passes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=True),  # the journal run holding its calls and orders
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("by", sa.String(128), nullable=True),
    sa.Column("open_before", sa.Integer, nullable=False),
    sa.Column("cancelled", sa.Integer, nullable=False),
    sa.Column("still_open", sa.Integer, nullable=False),
    sa.Column("error", ScrubbedText(), nullable=True),
    # The kill switch change (``control.since``) the pass answered: which accounts a halt has covered.
    sa.Column("halt_since", UTCDateTime(), nullable=True),
)


@dataclass(frozen=True, slots=True)
class HaltPass:
    """The outcome of one halt cancel pass on one account, as read back from the broker."""

    account: str
    at: dt.datetime
    open_before: int = 0
    cancelled: int = 0
    still_open: int = 0
    run_id: str | None = None
    by: str | None = None
    error: str | None = None
    halt_since: dt.datetime | None = None  # the halt (``control.since``) it answered; not in as_dict

    @property
    def clean(self) -> bool:
        return self.error is None and self.still_open == 0

    def line(self) -> str:
        if self.error is not None and not self.open_before:
            return f"{self.account}: FAILED: {self.error}"
        text = f"{self.account}: {self.cancelled} cancelled, {self.still_open} still open"
        text += f" (of {self.open_before} open)"
        return text + (f"; error: {self.error}" if self.error else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "at": self.at.isoformat(),
            "open_before": self.open_before,
            "cancelled": self.cancelled,
            "still_open": self.still_open,
            "run_id": self.run_id,
            "by": self.by,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ControlState:
    mode: Mode = Mode.NORMAL
    reason: str | None = None
    since: dt.datetime | None = None
    by: str | None = None

    @property
    def halted(self) -> bool:
        return self.mode is not Mode.NORMAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "halted": self.halted,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "by": self.by,
        }


class ControlStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_all(engine, metadata)

    def get(self) -> ControlState:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(control).where(control.c.id == 1)).first()
        if row is None:
            return ControlState()
        return ControlState(mode=row.mode, reason=row.reason, since=row.since, by=row.by)

    def set(
        self, mode: Mode, reason: str | None, by: str | None, now: dt.datetime, *, alerted: bool = False
    ) -> ControlState:
        """``alerted``: the caller publishes this change's alert itself (daemons then do not)."""
        values = {
            "halted": mode is not Mode.NORMAL,
            "mode": mode,
            "reason": reason,
            "since": now,
            "by": by,
            "alerted_by": by if alerted else None,
        }
        with self.engine.begin() as conn:
            done = conn.execute(control.update().where(control.c.id == 1).values(**values)).rowcount
            if not done:  # first halt on a fresh journal: another host may insert at the same moment
                try:
                    with conn.begin_nested():
                        conn.execute(control.insert().values(id=1, **values))
                except sa.exc.IntegrityError:
                    conn.execute(control.update().where(control.c.id == 1).values(**values))
        return ControlState(mode=mode, reason=reason, since=now, by=by)

    def claim_alert(self, state: ControlState, who: str) -> bool:
        """Whether ``who`` is the one to alert the change ``state`` saw: True for the first claimant of a
        change nobody alerted, False when its writer or another daemon did (or it was changed again)."""
        if state.since is None:
            return False
        with self.engine.begin() as conn:
            claimed = conn.execute(
                control.update()
                .where(control.c.id == 1, control.c.since == state.since, control.c.alerted_by.is_(None))
                .values(alerted_by=who)
            ).rowcount
        return bool(claimed)

    def record_pass(self, result: HaltPass) -> None:
        values = {k: v for k, v in result.as_dict().items() if k != "at"}
        with self.engine.begin() as conn:
            conn.execute(halt_passes.insert().values(at=result.at, halt_since=result.halt_since, **values))

    def last_passes(self) -> list[HaltPass]:
        """The latest halt cancel pass of each account, by account name."""
        latest = (
            sa.select(halt_passes.c.account, sa.func.max(halt_passes.c.id).label("id"))
            .group_by(halt_passes.c.account)
            .subquery()
        )
        q = (
            sa.select(halt_passes)
            .join(latest, halt_passes.c.id == latest.c.id)
            .order_by(halt_passes.c.account)
        )
        with read(self.engine) as conn:
            return [
                HaltPass(
                    account=r.account,
                    at=r.at,
                    open_before=r.open_before,
                    cancelled=r.cancelled,
                    still_open=r.still_open,
                    run_id=r.run_id,
                    by=r.by,
                    error=r.error,
                    halt_since=r.halt_since,
                )
                for r in conn.execute(q)
            ]

    def passed_for(self, since: dt.datetime) -> frozenset[str]:
        """Accounts with a halt cancel pass recorded for the halt that began at ``since``."""
        q = sa.select(halt_passes.c.account).where(halt_passes.c.halt_since == since).distinct()
        with read(self.engine) as conn:
            return frozenset(r.account for r in conn.execute(q))


def check_order_allowed(
    state: ControlState, side: Side, position_qty: int, quantity: int | None = None
) -> None:
    """Raise :class:`Halted` unless ``state`` lets this order out.

    In reduce-only mode an order must shrink the net position (``position_qty`` > 0 long, < 0 short)
    without flipping it: a SELL against a long, a BUY against a short, ``quantity`` <= |position|.
    """
    if state.mode is Mode.NORMAL:
        return
    why = f" ({state.reason})" if state.reason else ""
    if state.mode is Mode.HALT:
        raise Halted(f"halted{why}: no new orders", state.mode)
    reduces = (side is Side.SELL and position_qty > 0) or (side is Side.BUY and position_qty < 0)
    if not reduces:
        raise Halted(f"reduce-only{why}: {side.value} would not reduce position {position_qty}", state.mode)
    if quantity is not None and quantity > abs(position_qty):
        raise Halted(f"reduce-only{why}: {side.value} {quantity} exceeds position {position_qty}", state.mode)


class ControlView:
    """What a guard reads: the latest known state. A watcher keeps it fresh."""

    def __init__(self, state: ControlState | None = None) -> None:
        self.state = state or ControlState()


class ControlWatcher(ControlView):
    """Polls the control row (default every 0.25 s) in a worker thread; calls ``on_change`` on changes.
    ``before_poll``, awaited before each poll, may hold it back briefly (the daemon keeps polls out of
    the milliseconds around a fire's instant)."""

    def __init__(
        self,
        store: ControlStore,
        interval: float = 0.25,
        on_change: Callable[[ControlState, ControlState], Awaitable[None]] | None = None,
        before_poll: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(store.get())
        self.store = store
        self.interval = interval
        self.on_change = on_change
        self.before_poll = before_poll
        self.health: JournalHealth = PROCESS  # a journal outage is said once (a daemon hands its own)
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self) -> ControlState:
        new = await asyncio.to_thread(self.store.get)
        old, self.state = self.state, new
        if (new.mode, new.since) != (old.mode, old.since):
            why = new.reason or "no reason given"  # `runner resume` without --reason
            log.warning("kill switch: %s -> %s (%s, by %s)", old.mode.value, new.mode.value, why, new.by)
            if self.on_change is not None:
                await self.on_change(old, new)
        return new

    async def run(self) -> None:
        while True:
            try:
                if self.before_poll is not None:
                    await self.before_poll()
                if not self.health.idle():  # down: the daemon's heartbeat probes it, not every poll
                    await self.poll_once()
            except Exception as exc:  # keep the last known state; a locked db must not kill the watcher
                kept = self.state.mode.value
                if not self.health.trouble(exc, f"kill switch poll (keeping last state {kept})"):
                    log.exception("kill switch poll failed; keeping last state %s", self.state.mode.value)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class GuardedBroker(ForwardingBroker):
    """Wraps any Broker: ``place``/``modify``/``place_multileg`` refused while halted, reduce-only orders
    allowed in reduce-only mode. Cancels and reads always pass."""

    def __init__(self, inner: Broker, view: ControlView) -> None:
        super().__init__(inner)
        self.view = view

    async def _position_qty(
        self, instrument: Instrument, product: Product, side: Side, exclude: str | None = None
    ) -> int:
        """Net position in this instrument/product, less what open reducing orders on ``side`` already
        take (``exclude``: the order being modified, which is judged on its own pending quantity)."""
        net = sum(
            p.quantity
            for p in await self.inner.positions()
            if p.instrument.key == instrument.key and p.product is product
        )
        for o in await self.inner.open_orders():
            if (
                o.instrument.key == instrument.key
                and o.product is product
                and o.side is side
                and o.client_order_id != exclude
            ):
                net += o.side.sign * o.pending_quantity
        return net

    async def check(self, request: OrderRequest) -> None:
        state = self.view.state
        if state.mode is Mode.REDUCE_ONLY:
            held = await self._position_qty(request.instrument, request.product, request.side)
            check_order_allowed(state, request.side, held, request.quantity)
            # the state may have moved to HALT while we read positions
            if self.view.state.mode is Mode.HALT:
                check_order_allowed(self.view.state, request.side, 0)
        else:
            check_order_allowed(state, request.side, 0)

    async def place(self, request: OrderRequest) -> Order:
        await self.check(request)
        return await self.inner.place(request)

    def sends_now(self, request: OrderRequest) -> bool:
        """Would :meth:`place` pass ``request`` without a read? (NORMAL mode: a primed request may be
        written ahead of its run's path, runner.brokers.primed.write_primed; any other mode: no.)"""
        return self.view.state.mode is Mode.NORMAL

    async def modify(self, order: Order, change: Modification) -> Order:
        """Reduce-only: the order as modified must pass the place test (it reduces the position, on its
        side, by its pending quantity); a chase or a switch to MARKET of an entry would add risk."""
        state = self.view.state
        if state.mode is Mode.HALT:
            raise Halted(f"halted ({state.reason}): no modifications", state.mode)
        if state.mode is Mode.REDUCE_ONLY:
            total = change.quantity if change.quantity is not None else order.quantity
            pending = max(0, total - order.filled_quantity)
            held = await self._position_qty(
                order.instrument, order.product, order.side, order.client_order_id
            )
            check_order_allowed(state, order.side, held, pending)
            if self.view.state.mode is Mode.HALT:
                check_order_allowed(self.view.state, order.side, 0)
        return await self.inner.modify(order, change)

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        state = self.view.state
        if state.mode is not Mode.NORMAL:
            raise Halted(f"{state.mode.value}: no new multileg orders", state.mode)
        return await super().place_multileg(request)
