"""The paper book persisted in PostgreSQL: instances and processes share one book, and concurrent writers
(threads on separate connections, processes) serialize on the account row instead of corrupting it."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import test_paper_persistence as persistence_tests
from test_paper_persistence import REL, T0, broker, run_child

from runner.accounts import Account
from runner.brokers.paper.broker import PaperBroker, PaperStore, accounts_t, fills_t, orders_t
from runner.brokers.registry import create_broker
from runner.clock import VirtualClock
from runner.journal.db import make_engine
from runner.model import OrderRequest, OrderStatus, OrderType, Side


@pytest.fixture(autouse=True)
def _on_postgresql(request: pytest.FixtureRequest) -> None:
    if request.function.__module__ != __name__:  # a borrowed SQLite test
        request.getfixturevalue("pg_reroute")(persistence_tests)


# --- the SQLite persistence suite, unedited, on PostgreSQL -------------------------------------------------

test_separate_runs_share_the_book = persistence_tests.test_separate_runs_share_the_book
test_restart_after_a_failed_transaction_reloads = (
    persistence_tests.test_restart_after_a_failed_transaction_reloads
)
test_accounts_are_separate_books = persistence_tests.test_accounts_are_separate_books

# --- PostgreSQL-specific ----------------------------------------------------------------------------------


def own_connection_broker(url: str, clock: VirtualClock, account: str = "acc") -> PaperBroker:
    """A paper broker on its own engine (own connection), as another process would have."""
    acct = Account(name=account, broker="paper", options={"prices": {"NSE RELIANCE": 1400}})
    b = create_broker(acct, clock=clock, engine=make_engine(url))
    assert isinstance(b, PaperBroker)
    return b


def check_book(url: str, account: str, n_orders: int) -> None:
    """What a corrupted book would break: dense broker ids, one fill per trade id, position = fills."""
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            bodies = [json.loads(b) for b in c.execute(sa.select(orders_t.c.body)).scalars()]
            fill_nos = c.execute(sa.select(fills_t.c.fill_no).order_by(fills_t.c.fill_no)).scalars().all()
            ver, next_seq = c.execute(sa.select(accounts_t.c.ver, accounts_t.c.next_seq)).one()
    finally:
        engine.dispose()
    first = 100_000_000_001
    assert sorted(int(b["broker_order_id"]) for b in bodies) == list(range(first, first + n_orders))
    assert len({b["client_order_id"] for b in bodies}) == n_orders
    assert fill_nos == list(range(1, len(fill_nos) + 1))  # no fill numbered twice or skipped
    assert next_seq > n_orders and ver >= 1


async def test_concurrent_processes_do_not_corrupt_the_book(pg_db_url: str) -> None:
    n = 15
    # schema and account row first (see the fresh-database test below for the racy first start)
    PaperStore(make_engine(pg_db_url), "shared").ensure_schema()
    children = [run_child(pg_db_url, tag, n, T0) for tag in ("p", "q", "r")]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    assert len({o["ltp"] for o in outputs}) == 1  # same instant, separate processes, same price path

    parent = broker(pg_db_url, VirtualClock(T0 + dt.timedelta(seconds=n)), "shared")
    orders = await parent.orders()
    assert len(orders) == 3 * n and all(o.status is OrderStatus.FILLED for o in orders)
    fills = await parent.fills()
    assert len({f.trade_id for f in fills}) == len(fills) == 3 * n
    [pos] = await parent.positions()
    assert pos.quantity == sum(f.quantity * f.side.sign for f in fills)
    assert pos.quantity == sum(o.filled_quantity * o.side.sign for o in orders)
    check_book(pg_db_url, "shared", 3 * n)


def race_threads(n: int, work: Any) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_threads_on_separate_connections_serialize_on_the_account(pg_db_url: str) -> None:
    import asyncio

    n, per = 4, 10
    clock = VirtualClock(T0)
    books = [own_connection_broker(pg_db_url, clock) for _ in range(n)]
    books[0].store.ensure_schema()

    def place_many(i: int) -> None:
        async def go() -> None:
            for k in range(per):
                side = Side.BUY if (i + k) % 2 else Side.SELL
                kind = OrderType.MARKET if k % 3 else OrderType.LIMIT  # some rest, some fill
                price = None if kind is OrderType.MARKET else Decimal(1350 + k)
                req = OrderRequest(f"t{i}-{k}", REL, side, 1, kind, price=price)
                await books[i].place(req)

        asyncio.run(go())

    assert race_threads(n, place_many) == []
    for b in books:  # every instance, however stale its memory, reads the same book back
        seen = asyncio.run(b.orders())
        assert sorted(o.client_order_id for o in seen) == sorted(
            f"t{i}-{k}" for i in range(n) for k in range(per)
        )
    check_book(pg_db_url, "acc", n * per)


def test_the_same_client_id_from_two_connections_is_placed_once(pg_db_url: str) -> None:
    import asyncio

    from runner.errors import Rejected

    clock = VirtualClock(T0)
    books = [own_connection_broker(pg_db_url, clock) for _ in range(2)]
    books[0].store.ensure_schema()
    results: list[Any] = []

    def place(i: int) -> None:
        try:
            results.append(asyncio.run(books[i].place(OrderRequest("dup", REL, Side.BUY, 1))))
        except Rejected as exc:
            results.append(exc)

    assert race_threads(2, place) == []
    placed = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Rejected)]
    assert len(placed) == 1 and len(refused) == 1 and refused[0].code == "duplicate", results
    check_book(pg_db_url, "acc", 1)


def test_processes_starting_together_on_an_empty_database(pg_db_url: str) -> None:
    children = [run_child(pg_db_url, tag, 3, T0) for tag in ("p", "q", "r", "s")]
    errors = []
    for child in children:
        _out, err = child.communicate(timeout=120)
        if child.returncode != 0:
            errors.append(next(line for line in err.splitlines() if line.startswith("sqlalchemy.exc")))
    assert errors == []
    check_book(pg_db_url, "shared", 12)
