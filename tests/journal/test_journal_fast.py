"""The journal's hot path (pre-compiled statements on a raw DBAPI connection) stores exactly what the
SQLAlchemy Core path would, stays portable, survives Engine.dispose(), and its call-row JSON is the
generic redacted JSON."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import runner.journal.fastpath as fastpath
from runner.engine.records import _flat, _json
from runner.journal.db import make_engine
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, Resolution, fills, order_intents
from runner.logs import redact
from runner.model import Instrument, Order, OrderRequest, OrderStatus, OrderType, Product, Side

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
T0 = dt.datetime(2026, 3, 2, 9, 20, 0, 123456, tzinfo=IST)
INS = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), lot_size=75)


def _journal(tmp_path) -> Journal:
    j = Journal(engine=make_engine(f"sqlite:///{tmp_path / 'j.db'}"))
    j.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    return j


def _order(status: OrderStatus, filled: int, avg: str | None, price: str = "24000.05") -> Order:
    return Order(
        "c1", "B1", INS, Side.BUY, 150, OrderType.LIMIT, Product.MIS, status,
        filled_quantity=filled, average_price=Decimal(avg) if avg else None, price=Decimal(price),
    )  # fmt: skip


def test_rows_written_by_the_fast_path_read_back_through_core(tmp_path):
    j = _journal(tmp_path)
    req = OrderRequest("c1", INS, Side.BUY, 150, OrderType.LIMIT, price=Decimal("24000.05"))
    j.add_intent(Intent("c1", "r1", "a", "s", "s", 0, 0, Purpose.ENTRY, req, T0))
    j.record_order(_order(OrderStatus.PARTIALLY_FILLED, 75, "24000.00"), T0 + dt.timedelta(seconds=1))
    j.record_order(_order(OrderStatus.FILLED, 150, "24000.03"), T0 + dt.timedelta(seconds=2))
    with j.engine.connect() as c:
        row = c.execute(sa.select(order_intents)).mappings().one()
        stored = c.exec_driver_sql("SELECT created_at, price FROM order_intents").one()
        fill_prices = [r.price for r in c.execute(sa.select(fills).order_by(fills.c.id))]
    assert row["created_at"] == T0 and row["created_at"].tzinfo is dt.UTC
    assert row["price"] == Decimal("24000.05") and row["average_price"] == Decimal("24000.03")
    assert (row["status"], row["filled_quantity"], row["broker_order_id"]) == ("filled", 150, "B1")
    assert row["resolution"] == Resolution.CONFIRMED.value
    assert stored == ("2026-03-02 03:50:00.123456", "24000.05")  # SQLAlchemy's own storage format
    assert fill_prices == [Decimal("24000.00"), Decimal("24000.06")]
    got = j.get_intent("c1")
    assert got is not None and got.request == req and got.created_at == T0
    assert [i.client_order_id for i in j.intents(run_id="r1", statuses=[OrderStatus.FILLED])] == ["c1"]
    assert j.intents(account="a", statuses=[OrderStatus.OPEN], resolution=[Resolution.PENDING]) == []
    assert j.count_intents("r1") == 1 and j.count_intents("r1", exclude=[Purpose.ENTRY]) == 0


def test_a_report_without_price_keeps_the_modified_price(tmp_path):
    j = _journal(tmp_path)
    req = OrderRequest("c1", INS, Side.BUY, 150, OrderType.LIMIT, price=Decimal("1"))
    j.add_intent(Intent("c1", "r1", "a", "s", "s", 0, 0, Purpose.ENTRY, req, T0))
    j.record_order(_order(OrderStatus.OPEN, 0, None, price="2"), T0)
    no_price = Order("c1", "B1", INS, Side.BUY, 150, OrderType.LIMIT, Product.MIS, OrderStatus.OPEN)
    j.record_order(no_price, T0)
    with j.engine.connect() as c:
        assert c.execute(sa.select(order_intents.c.current_price)).scalar_one() == Decimal("2")


def test_dispose_drops_the_connection_and_the_journal_reconnects(tmp_path):
    j = _journal(tmp_path)
    fast = j._fast
    assert j.get_run("r1") is not None and fast._raw is not None
    j.engine.dispose()
    assert fast._raw is None
    assert j.get_run("r1") is not None and fast._raw is not None


def test_hot_statements_compile_for_postgresql():
    fast = fastpath._Fast.__new__(fastpath._Fast)
    fast.dialect = postgresql.psycopg2.dialect()
    fast._compiled = {}
    stmts = [v for v in vars(fastpath).values() if isinstance(v, fastpath.Stmt)]
    stmts.append(fastpath.intents_stmt(("run_id", "account"), 2, 3))
    assert len(stmts) > 15
    for s in stmts:
        c = fast.compiled(s)
        assert c.keys is None and "?" not in c.sql and "RETURNING" not in c.sql, c.sql


def test_call_row_json_is_the_generic_redacted_json():
    order = Order(
        "c1", None, INS, Side.SELL, 75, OrderType.SL, Product.NRML, OrderStatus.REJECTED,
        price=Decimal("10.5"), trigger_price=Decimal("11"), reject_reason="bad Bearer abc.def",
        updated_at=T0, tag="x",
    )  # fmt: skip
    jwt = "eyJhbGciOiJI.eyJzdWIiOiIx.SflKxwRJSMeK"
    req = OrderRequest("c1", INS, Side.SELL, 75, OrderType.MARKET, tag=jwt)
    for value in (order, req, [order, order], (order,), []):
        flat = [_flat(v) for v in value] if isinstance(value, list | tuple) else _flat(value)
        assert _json(value) == json.dumps(redact(flat), default=str, sort_keys=True)
    assert "abc.def" not in _json(order) and "eyJ" not in _json(req)
