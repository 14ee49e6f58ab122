"""Shared by the re-login and foreign-row tests: each adapter connected to its simulator on a virtual
clock (sessions expire after an hour), with a way to count the simulator's logins and a resting order;
and the foreign-row check every adapter must pass."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from helpers.blitz import APP_KEY, APP_KEY_ENV, SIM_OPTIONS
from helpers.blitz import broker as blitz_broker
from runner.accounts import Account, RateLimit
from runner.brokers.alphapoint import client as alphapoint
from runner.brokers.alphapoint import sim as ap_sim
from runner.brokers.blitz import sim as blitz_sim
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo import client as kotak_neo
from runner.brokers.kotak_neo import sim as kotak_sim
from runner.brokers.odin import client as odin
from runner.brokers.odin import sim as odin_sim
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import RandomWalk, StepPath
from runner.clock import VirtualClock
from runner.errors import BrokerError, Rejected
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Side

IST = ZoneInfo("Asia/Kolkata")
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST)  # a Monday
EXPIRE = "expire=3600s"
BROKERS = Path(__file__).parents[1] / "brokers"  # tests/brokers/<venue>/fixtures


@dataclass
class Setup:
    broker: Any
    logins: Callable[[], int]  # logins the simulator has seen
    order: Callable[[str], OrderRequest]  # a resting limit order that the simulator accepts
    sim: Any = None


Factory = Callable[[VirtualClock, pytest.MonkeyPatch], contextlib.AbstractAsyncContextManager[Setup]]


@contextlib.asynccontextmanager
async def blitz(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    monkeypatch.setenv(APP_KEY_ENV, APP_KEY)
    async with blitz_sim.start(FaultPlan.parse(EXPIRE), clock=clock, options=SIM_OPTIONS) as sim:
        b = blitz_broker(sim)
        try:
            yield Setup(b, lambda: sim.sim.logins, lambda cid: OrderRequest(
                cid, Instrument("NSE", "IDEA"), Side.BUY, 10, OrderType.LIMIT, price=Decimal("10.50")),
                sim.sim)
        finally:
            await b.close()


KOTAK_CSV = str(BROKERS / "kotak_neo" / "fixtures" / "instruments.csv")
KOTAK_MASTER = InstrumentMaster.load(KOTAK_CSV, broker="kotak_neo")


@contextlib.asynccontextmanager
async def kotak(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    prices = StepPath()
    for row in KOTAK_MASTER:
        prices.set(row.instrument, Decimal(100), clock.now() - dt.timedelta(days=3))
    idea = KOTAK_MASTER.resolve(Instrument("NSE", "IDEA")).instrument
    async with kotak_sim.start(faults=EXPIRE, clock=clock, master=KOTAK_MASTER, retry_after="0.001",
                               engine=MatchingEngine(prices, MatchingConfig())) as sim:
        acct, env = kotak_sim.account_for(sim, "desk", instruments=KOTAK_CSV, orders_per_second=1000,
                                          burst=50)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        b = kotak_neo.create(acct, clock=clock)
        try:
            yield Setup(b, lambda: sim.logins, lambda cid: OrderRequest(
                cid, idea, Side.BUY, 1, OrderType.LIMIT, price=Decimal("99")), sim)
        finally:
            await b.close()


ODIN_MASTER = InstrumentMaster.load(BROKERS / "odin" / "fixtures" / "master.csv", broker="odin")


@contextlib.asynccontextmanager
async def odin_(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    engine = MatchingEngine(RandomWalk(seed=7), MatchingConfig(session_close=None))
    idea = ODIN_MASTER.resolve(Instrument("NSE", "IDEA")).instrument
    async with odin_sim.start(clock=clock, master=ODIN_MASTER, engine=engine,
                              faults=FaultPlan.parse(EXPIRE)) as sim:
        acct, env = sim.account_env("odin1")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        b = odin.create(acct, master=ODIN_MASTER)
        tick = idea.tick_size or Decimal("0.05")
        price = (engine.last_price(idea, clock.now()) * Decimal("0.95") / tick).quantize(Decimal(1)) * tick
        try:
            yield Setup(b, lambda: sim.logins, lambda cid: OrderRequest(
                cid, idea, Side.BUY, 1, OrderType.LIMIT, price=price), sim)
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def alpha(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    monkeypatch.setenv("AP_USER", "trader")
    monkeypatch.setenv("AP_PASS", "trader-pass")
    reliance = Instrument("NSE", "RELIANCE")
    prices = StepPath()
    prices.set(reliance, Decimal(1000), 0)
    async with ap_sim.start(faults=EXPIRE, clock=clock.now, prices=prices) as sim:
        acct = Account(name="ap", broker="alphapoint", endpoints={"ws": sim.url},
                       credentials={"username": {"env": "AP_USER"}, "password": {"env": "AP_PASS"}},
                       instruments=str(ap_sim.MASTER_FILE), timeout_seconds=2.0,
                       rate_limit=RateLimit(orders_per_second=1000, burst=1000))
        b = alphapoint.create(acct)
        try:
            yield Setup(b, lambda: sim.logins, lambda cid: OrderRequest(
                cid, reliance, Side.BUY, 1, OrderType.LIMIT, price=Decimal("990")), sim)
        finally:
            await b.close()


ADAPTERS: dict[str, Factory] = {"blitz": blitz, "kotak_neo": kotak, "odin": odin_, "alphapoint": alpha}


async def check_foreign_rows(
    s: Setup,
    inject: Callable[[Mapping[str, Any]], None],
    *,
    odd: Mapping[str, Any],
    odd_id: str,
    readable: Mapping[str, Any],
    readable_id: str,
    own_shaped: Mapping[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One order entered outside the runner, of a type or side the adapter cannot map, must not break any
    read on the account; a readable foreign order is listed; a row carrying one of OUR ids is never
    skipped silently (unreadable -> BrokerError, and never Rejected: nothing was refused)."""
    await s.broker.connect()
    placed = await s.broker.place(s.order("rnforeign1"))
    inject(odd)
    inject(readable)
    with caplog.at_level(logging.WARNING):
        book = {o.broker_order_id for o in await s.broker.orders()}
    assert placed.broker_order_id in book and readable_id in book and odd_id not in book
    assert f"skipping foreign order {odd_id}" in caplog.text
    assert placed.broker_order_id in {o.broker_order_id for o in await s.broker.open_orders()}
    found = await s.broker.get_order("rnforeign1")
    assert found is not None and found.broker_order_id == placed.broker_order_id
    with pytest.raises(BrokerError) as info:  # asked for by id: unreadable, not skipped
        await s.broker.get_order_by_broker_id(odd_id)
    assert not isinstance(info.value, Rejected)
    cancelled = await s.broker.cancel(found)  # cancel-first and square-off go on working
    assert cancelled.status in (OrderStatus.PENDING_CANCEL, OrderStatus.CANCELLED)
    inject(own_shaped)
    with pytest.raises(BrokerError) as info:
        await s.broker.orders()
    assert not isinstance(info.value, Rejected)
