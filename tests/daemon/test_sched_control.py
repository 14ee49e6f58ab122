"""Kill switch: the control row, the guard around a real (paper) broker, and a daemon honouring a halt."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from helpers.sched import RecordingExecutor, make_daemon

from runner.brokers.paper.broker import PaperBroker
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon
from runner.engine.killswitch import (
    ControlState,
    ControlStore,
    GuardedBroker,
    Halted,
    Mode,
    check_order_allowed,
)
from runner.journal.db import make_engine
from runner.model import Instrument, Order, OrderRequest, OrderStatus, OrderType, Product, Side

IST = ZoneInfo("Asia/Kolkata")
RELIANCE = Instrument("NSE", "RELIANCE", tick_size=Decimal("0.05"))
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)


def req(
    cid: str, side: Side, qty: int, order_type: OrderType = OrderType.MARKET, price: Decimal | None = None
) -> OrderRequest:
    return OrderRequest(cid, RELIANCE, side, qty, order_type=order_type, product=Product.MIS, price=price)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return make_engine(f"sqlite:///{tmp_path / 'journal.db'}")


@pytest.mark.parametrize(
    ("mode", "side", "position", "qty", "allowed"),
    [
        (Mode.NORMAL, Side.BUY, 0, 10, True),
        (Mode.HALT, Side.SELL, 100, 10, False),
        (Mode.REDUCE_ONLY, Side.SELL, 100, 100, True),
        (Mode.REDUCE_ONLY, Side.SELL, 100, 101, False),  # would flip to short
        (Mode.REDUCE_ONLY, Side.BUY, 100, 10, False),  # adds to a long
        (Mode.REDUCE_ONLY, Side.BUY, -50, 50, True),
        (Mode.REDUCE_ONLY, Side.SELL, 0, 1, False),  # flat: nothing to reduce
    ],
)
def test_check_order_allowed(mode: Mode, side: Side, position: int, qty: int, allowed: bool) -> None:
    state = ControlState(mode=mode, reason="test")
    if allowed:
        check_order_allowed(state, side, position, qty)
    else:
        with pytest.raises(Halted) as info:
            check_order_allowed(state, side, position, qty)
        assert info.value.mode is mode


def test_control_row_round_trip(engine: sa.Engine) -> None:
    store = ControlStore(engine)
    assert store.get().mode is Mode.NORMAL
    store.set(Mode.REDUCE_ONLY, "risk desk", "ops@host", NOW)
    other = ControlStore(make_engine(str(engine.url)))  # another process's view
    state = other.get()
    assert (state.mode, state.reason, state.by, state.since) == (
        Mode.REDUCE_ONLY,
        "risk desk",
        "ops@host",
        NOW,
    )
    store.set(Mode.NORMAL, None, "ops@host", NOW)
    assert other.get().halted is False


async def test_guarded_paper_broker_honours_halt_and_reduce_only(engine: sa.Engine) -> None:
    clock = VirtualClock(NOW)
    store = ControlStore(engine)
    from runner.engine.killswitch import ControlWatcher

    watcher = ControlWatcher(store)
    broker = GuardedBroker(PaperBroker("paper", engine=engine, clock=clock), watcher)
    await broker.connect()
    bought = await broker.place(req("b1", Side.BUY, 50))
    assert bought.status is not OrderStatus.REJECTED
    clock.advance(2)
    [pos] = await broker.positions()
    assert pos.quantity == 50

    store.set(Mode.HALT, "stop", "ops", clock.now())
    await watcher.poll_once()
    for cid, side in (("h1", Side.BUY), ("h2", Side.SELL)):
        with pytest.raises(Halted):
            await broker.place(req(cid, side, 10))
        assert await broker.get_order(cid) is None  # nothing reached the broker

    store.set(Mode.REDUCE_ONLY, "wind down", "ops", clock.now())
    await watcher.poll_once()
    with pytest.raises(Halted, match="would not reduce"):
        await broker.place(req("r1", Side.BUY, 10))
    with pytest.raises(Halted, match="exceeds position"):
        await broker.place(req("r2", Side.SELL, 60))
    sold = await broker.place(req("r3", Side.SELL, 50))
    assert sold.client_order_id == "r3"
    clock.advance(2)
    [pos] = await broker.positions()
    assert pos.quantity == 0

    store.set(Mode.NORMAL, None, "ops", clock.now())
    await watcher.poll_once()
    assert (await broker.place(req("n1", Side.BUY, 1))).client_order_id == "n1"


async def test_reduce_only_counts_open_reducing_orders(engine: sa.Engine) -> None:
    clock = VirtualClock(NOW)
    store = ControlStore(engine)
    from runner.engine.killswitch import ControlWatcher

    watcher = ControlWatcher(store)
    broker = GuardedBroker(PaperBroker("paper", engine=engine, clock=clock), watcher)
    await broker.place(req("b1", Side.BUY, 50))
    clock.advance(2)
    # A resting SELL far above the market already takes 40 of the 50.
    await broker.place(req("s1", Side.SELL, 40, OrderType.LIMIT, Decimal("1150")))
    store.set(Mode.REDUCE_ONLY, None, "ops", clock.now())
    await watcher.poll_once()
    with pytest.raises(Halted, match="exceeds position 10"):
        await broker.place(req("s2", Side.SELL, 20))
    await broker.place(req("s3", Side.SELL, 10))


async def daemon_on(paper: PaperBroker, engine: sa.Engine, tmp_path: Path, clock: VirtualClock) -> Daemon:
    """A prepared daemon (no playbooks) whose only account is ``paper``, guarded by its kill switch."""
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    daemon = make_daemon(pbdir, engine, clock, RecordingExecutor(clock), "d1")
    daemon.brokers = {"paper": GuardedBroker(paper, daemon.watcher)}
    await daemon.prepare()
    return daemon


async def test_daemon_halt_cancels_open_orders_within_a_poll(engine: sa.Engine, tmp_path: Path) -> None:
    clock = VirtualClock(NOW)
    paper = PaperBroker("paper", engine=engine, clock=clock)
    daemon = await daemon_on(paper, engine, tmp_path, clock)
    resting = await paper.place(req("l1", Side.BUY, 5, OrderType.LIMIT, Decimal("850")))
    assert resting.status.is_working
    ControlStore(make_engine(str(engine.url))).set(Mode.HALT, "runner halt", "ops", clock.now())
    await daemon.watcher.poll_once()
    await daemon.halt_passes_done()  # the pass runs beside the poller
    after = await paper.get_order("l1")
    assert after is not None and after.status is OrderStatus.CANCELLED
    with pytest.raises(Halted):
        await daemon.brokers["paper"].place(req("x1", Side.BUY, 1))


class SlowCancelPaper(PaperBroker):
    """Paper whose cancels wait for ``go``: a broker that is slow to answer during a halt."""

    go: asyncio.Event

    async def cancel(self, order: Order) -> Order:
        await self.go.wait()
        return await super().cancel(order)


async def test_resume_during_a_slow_halt_cancel_pass_is_seen_within_a_poll(
    engine: sa.Engine, tmp_path: Path
) -> None:
    clock = VirtualClock(NOW)
    paper = SlowCancelPaper("paper", engine=engine, clock=clock)
    paper.go = asyncio.Event()
    daemon = await daemon_on(paper, engine, tmp_path, clock)
    control = ControlStore(engine)
    await paper.place(req("l1", Side.BUY, 5, OrderType.LIMIT, Decimal("850")))
    control.set(Mode.HALT, "runner halt", "ops", clock.now())
    await asyncio.wait_for(daemon.watcher.poll_once(), timeout=5)
    assert daemon.watcher.state.mode is Mode.HALT
    control.set(Mode.NORMAL, "runner resume", "ops", clock.now())
    # the pass is still waiting on the broker; the poller is not: the resume is in effect at once
    await asyncio.wait_for(daemon.watcher.poll_once(), timeout=5)
    assert daemon.watcher.state.mode is Mode.NORMAL and daemon._hold() is None
    paper.go.set()
    await daemon.halt_passes_done()  # the pass started under the halt still finishes its cancels
    after = await paper.get_order("l1")
    assert after is not None and after.status is OrderStatus.CANCELLED
