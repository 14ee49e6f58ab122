"""The paper book's group commit on PostgreSQL: calls made in one loop tick share one transaction, run off
the event loop; matching is exactly what serial calls give, and no caller is answered before the commit."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from runner.brokers.paper.broker import PaperBroker, orders_t
from runner.clock import VirtualClock
from runner.journal.db import make_engine
from runner.model import Instrument, OrderRequest, OrderType, Side

T0 = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)
REL = Instrument("NSE", "RELIANCE")


def paper(url: str, clock: VirtualClock) -> PaperBroker:
    return PaperBroker("acc", engine=make_engine(url), clock=clock, prices=None)


def stored_orders(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(orders_t)).scalar_one())
    finally:
        engine.dispose()


def buy(cid: str, qty: int = 1) -> OrderRequest:
    return OrderRequest(cid, REL, Side.BUY, qty, OrderType.MARKET)


async def test_calls_in_one_tick_share_a_transaction_and_match_as_serial_calls(pg_db_url: str) -> None:
    clock = VirtualClock(T0)
    b = paper(pg_db_url, clock)
    assert b._batcher is not None
    await b.connect()
    placed = await asyncio.gather(*(b.place(buy(f"c{i}", i + 1)) for i in range(50)))
    assert max(b._batcher.batches) > 1  # coalesced, not 50 commits
    # Answered only after the commit: another connection sees every order already.
    assert stored_orders(pg_db_url) == 50
    assert [o.broker_order_id for o in placed] == [str(100_000_000_001 + i) for i in range(50)]
    clock.advance(1)
    # Another instance (another process's view) reads the same exact position.
    other = paper(pg_db_url, clock)
    (position,) = await other.positions()
    assert position.quantity == sum(range(1, 51))
    fills = await other.fills()
    assert sum(f.quantity * f.price for f in fills) == position.average_price * position.quantity


async def test_a_failed_commit_answers_no_caller_and_books_nothing(
    pg_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = VirtualClock(T0)
    b = paper(pg_db_url, clock)
    await b.connect()
    real_commit = b.store.db.commit

    def lost(cur: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(b.store.db, "commit", lost)
    got = await asyncio.gather(*(b.place(buy(f"x{i}")) for i in range(5)), return_exceptions=True)
    assert all(isinstance(g, psycopg.OperationalError) for g in got)
    assert stored_orders(pg_db_url) == 0
    monkeypatch.setattr(b.store.db, "commit", real_commit)
    again = await b.place(buy("x0"))  # nothing was booked: the same client id is new
    assert again.broker_order_id == "100000000001" and stored_orders(pg_db_url) == 1


async def test_one_calls_bug_fails_only_that_call(pg_db_url: str) -> None:
    clock = VirtualClock(T0)
    b = paper(pg_db_url, clock)
    await b.connect()
    assert b._batcher is not None

    def boom(now: dt.datetime) -> None:
        raise RuntimeError("a bug in one call")

    got = await asyncio.gather(
        b.place(buy("a")), b._batcher.submit(boom, clock.now()), b.place(buy("b")), return_exceptions=True
    )
    assert isinstance(got[1], RuntimeError)
    assert [o.client_order_id for o in got if not isinstance(o, BaseException)] == ["a", "b"]  # type: ignore[union-attr]
    assert stored_orders(pg_db_url) == 2
    assert (await b.positions())[0].quantity == 2
    assert Decimal(0) < (await b.positions())[0].average_price
