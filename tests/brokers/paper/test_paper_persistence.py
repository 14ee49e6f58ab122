"""Paper books persist in SQLite: across broker instances, across processes, and under concurrent writers."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.accounts import Account
from runner.brokers.paper.broker import PaperBroker, orders_t
from runner.brokers.registry import create_broker
from runner.clock import VirtualClock
from runner.errors import Rejected
from runner.journal.db import default_db_url, make_engine
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Side

S = OrderStatus
T0 = dt.datetime(2026, 3, 2, 3, 50, tzinfo=dt.UTC)  # 09:20 IST
SQUARE_OFF = dt.datetime(2026, 3, 2, 9, 45, tzinfo=dt.UTC)  # 15:15 IST
REL = Instrument("NSE", "RELIANCE")
REPO = Path(__file__).resolve().parents[3]


def broker(url: str, clock: VirtualClock, account: str = "acc", **options: object) -> PaperBroker:
    acct = Account(name=account, broker="paper", options={"prices": {"NSE RELIANCE": 1400}, **options})
    b = create_broker(acct, clock=clock, db_url=url)
    assert isinstance(b, PaperBroker)
    return b


async def test_separate_runs_share_the_book(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    morning = broker(url, VirtualClock(T0))
    await morning.place(OrderRequest("entry", REL, Side.BUY, 10))
    await morning.place(OrderRequest("target", REL, Side.SELL, 10, OrderType.LIMIT, price=Decimal(1600)))
    [pos] = await morning.positions()
    assert pos.quantity == 10 and Decimal(1200) < pos.average_price < Decimal(1600)

    # A later process-like instance: fresh memory, same database, a later clock.
    afternoon = broker(url, VirtualClock(SQUARE_OFF))
    entry = await afternoon.get_order("entry")
    assert entry is not None and entry.status is S.FILLED
    [target] = await afternoon.open_orders()
    assert target.client_order_id == "target"
    await afternoon.cancel(target)
    await afternoon.place(OrderRequest("exit", REL, Side.SELL, 10))
    assert [p.quantity for p in await afternoon.positions()] == [0]

    # The morning instance sees the afternoon's changes on its next call.
    cancelled = await morning.get_order("target")
    assert cancelled is not None and cancelled.status in (S.PENDING_CANCEL, S.CANCELLED)
    with pytest.raises(Rejected) as info:
        await morning.place(OrderRequest("exit", REL, Side.SELL, 10))
    assert info.value.code == "duplicate"
    assert len(await morning.orders()) == 3 or len(await afternoon.orders()) == 3
    ids = [o.broker_order_id for o in await afternoon.orders()]
    assert len(set(ids)) == len(ids) == 3


async def test_restart_after_a_failed_transaction_reloads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    clock = VirtualClock(T0)
    b = broker(url, clock)
    await b.place(OrderRequest("a", REL, Side.BUY, 1, OrderType.LIMIT, price=Decimal(1300)))
    ver = b.store.ver

    def boom(now: dt.datetime) -> None:
        b.matching.book("acc").next_seq = 10**6  # a half-done change that must not survive
        raise RuntimeError("crash inside the transaction")

    with pytest.raises(RuntimeError):
        b._txn(boom)
    assert b.store.ver is None  # memory dropped; the database was rolled back
    placed = await b.place(OrderRequest("b", REL, Side.BUY, 1, OrderType.LIMIT, price=Decimal(1300)))
    assert placed.broker_order_id == "100000000002"
    assert b.store.ver == (ver or 0) + 1


async def test_in_memory_database_is_private(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    one, two = broker("sqlite://", clock), broker("sqlite://", clock)
    await one.place(OrderRequest("m", REL, Side.BUY, 1))
    assert await two.get_order("m") is None
    assert await one.get_order("m") is not None


async def test_accounts_are_separate_books(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    clock = VirtualClock(T0)
    a, b = broker(url, clock, "a"), broker(url, clock, "b")
    await a.place(OrderRequest("same", REL, Side.BUY, 1))
    await b.place(OrderRequest("same", REL, Side.SELL, 2))  # same client id, other account: fine
    assert [p.quantity for p in await a.positions()] == [1]
    assert [p.quantity for p in await b.positions()] == [-2]


def test_default_url_and_pragmas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNNER_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_db_url() == f"sqlite:///{tmp_path / '.runner' / 'runner.db'}"
    assert (tmp_path / ".runner").is_dir()
    monkeypatch.setenv("RUNNER_DB", "sqlite:///elsewhere.db")
    assert default_db_url() == "sqlite:///elsewhere.db"
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


CHILD = textwrap.dedent(
    """
    import asyncio, datetime as dt, json, sys
    from decimal import Decimal
    from runner.accounts import Account
    from runner.brokers.registry import create_broker
    from runner.clock import VirtualClock
    from runner.model import Instrument, OrderRequest, OrderType, Side

    url, tag, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    async def main():
        clock = VirtualClock(dt.datetime.fromisoformat(start))
        acct = Account(name="shared", broker="paper", options={"prices": {"NSE RELIANCE": 1400}})
        b = create_broker(acct, clock=clock, db_url=url)
        rel = Instrument("NSE", "RELIANCE")
        for i in range(n):
            side = Side.BUY if i % 3 else Side.SELL
            await b.place(OrderRequest(f"{tag}-{i}", rel, side, 1 + i % 2))
            clock.advance(0.5)
        print(json.dumps({"ltp": str(await b.ltp(rel)), "orders": len(await b.orders())}))

    asyncio.run(main())
    """
)


def run_child(url: str, tag: str, n: int, start: dt.datetime) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, tag, str(n), start.isoformat()],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_concurrent_processes_do_not_corrupt_the_book(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    n = 15
    children = [run_child(url, tag, n, T0) for tag in ("p", "q", "r")]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    # Same instant, separate processes, same price path.
    assert len({o["ltp"] for o in outputs}) == 1

    parent = broker(url, VirtualClock(T0 + dt.timedelta(seconds=n)), "shared")
    orders = await parent.orders()
    assert len(orders) == 3 * n
    first = 100_000_000_001
    assert sorted(int(o.broker_order_id or 0) for o in orders) == list(range(first, first + 3 * n))
    assert all(o.status is S.FILLED for o in orders)
    fills = await parent.fills()
    assert len({f.trade_id for f in fills}) == len(fills) == 3 * n
    expected = sum(f.quantity * f.side.sign for f in fills)
    [pos] = await parent.positions()
    assert pos.quantity == expected == sum(o.filled_quantity * o.side.sign for o in orders)
    assert pos.day_buy_quantity == sum(f.quantity for f in fills if f.side is Side.BUY)

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(orders_t)).scalar()
        assert rows == 3 * n
    engine.dispose()


async def test_a_child_process_sees_the_parents_orders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    parent = broker(url, VirtualClock(T0), "shared")
    await parent.place(OrderRequest("parent-0", REL, Side.BUY, 5))
    child = run_child(url, "kid", 2, T0 + dt.timedelta(seconds=10))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert json.loads(out)["orders"] == 3
    kid = await parent.get_order("kid-1")
    assert kid is not None and kid.status is S.FILLED
