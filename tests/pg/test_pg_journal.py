"""The journal on a real PostgreSQL server: the SQLite journal tests re-run unedited on PostgreSQL
(``pg_reroute``), plus what only shows with two connections racing: one run row, one intent per slot,
and a hot-path connection that stays usable after a refused insert."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import test_engine_place as place_tests
import test_journal as journal_tests
import test_journal_fast as fast_tests

from runner.journal.db import make_engine
from runner.journal.errors import DuplicateIntent, JournalError
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, order_intents, runs
from runner.model import Instrument, Order, OrderRequest, OrderStatus, OrderType, Product, Side


@pytest.fixture(autouse=True)
def _on_postgresql(request: pytest.FixtureRequest) -> None:
    if request.function.__module__ != __name__:  # a borrowed SQLite test
        request.getfixturevalue("pg_reroute")(journal_tests, place_tests, fast_tests)


# --- the SQLite suite's core journal behaviours, unedited, on PostgreSQL ---------------------------------

test_illegal_transition_is_recorded_and_not_applied = (
    journal_tests.test_illegal_transition_is_recorded_and_not_applied
)
test_duplicate_intent_is_refused = journal_tests.test_duplicate_intent_is_refused
test_second_start_of_the_same_run_resumes_without_reexecuting = (
    journal_tests.test_second_start_of_the_same_run_resumes_without_reexecuting
)
test_interrupted_run_resumes_from_the_unfinished_step = (
    journal_tests.test_interrupted_run_resumes_from_the_unfinished_step
)
test_unknown_intents_are_reconciled_before_anything_is_sent = (
    journal_tests.test_unknown_intents_are_reconciled_before_anything_is_sent
)
test_intent_row_is_committed_before_place_is_called = (
    place_tests.test_intent_row_is_committed_before_place_is_called
)
test_market_place_fills_and_is_journaled = place_tests.test_market_place_fills_and_is_journaled
test_outcome_unknown_after_send_is_resolved_by_lookup_not_resent = (
    place_tests.test_outcome_unknown_after_send_is_resolved_by_lookup_not_resent
)
test_outcome_unknown_that_never_arrived_is_sent_again_under_the_same_id = (
    place_tests.test_outcome_unknown_that_never_arrived_is_sent_again_under_the_same_id
)
test_a_report_without_price_keeps_the_modified_price = (
    fast_tests.test_a_report_without_price_keeps_the_modified_price
)
test_dispose_drops_the_connection_and_the_journal_reconnects = (
    fast_tests.test_dispose_drops_the_connection_and_the_journal_reconnects
)

# --- PostgreSQL-specific ----------------------------------------------------------------------------------

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
T0 = dt.datetime(2026, 3, 2, 9, 20, 0, 123456, tzinfo=IST)
INS = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), lot_size=75)


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(n) in n threads released together; results (or exceptions)."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        try:
            out[i] = work(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def journals(url: str, n: int) -> list[Journal]:
    """n journals on n separate engines: as separate processes would be (one raw connection each)."""
    return [Journal(engine=make_engine(url)) for _ in range(n)]


def intent(cid: str, run_id: str = "r1", slot: str = "s", attempt: int = 0) -> Intent:
    req = OrderRequest(cid, INS, Side.BUY, 75, OrderType.LIMIT, price=Decimal("24000.05"))
    return Intent(cid, run_id, "a", "s", slot, 0, attempt, Purpose.ENTRY, req, T0)


def test_concurrent_start_of_one_run_creates_one_row(pg_db_url: str) -> None:
    js = journals(pg_db_url, 4)
    for round_no in range(5):
        run_id = f"r{round_no}"
        got = race(4, lambda i, run_id=run_id: js[i].start_run(
            run_id, playbook="p", account="a", scheduled_for=T0, mode="run", now=T0))  # fmt: skip
        created = [r for r in got if not isinstance(r, Exception) and not r.resumed]
        others = [r for r in got if r not in created]
        assert len(created) == 1, got
        # the losers either saw the row (resumed) or lost the insert race (a clear error, never a crash)
        assert all(isinstance(r, JournalError) or r.resumed for r in others), others
        resumed = sum(1 for r in others if not isinstance(r, Exception))
        stored = js[0].get_run(run_id)
        assert stored is not None and stored.starts == 1 + resumed


def test_one_intent_per_slot_across_connections_and_the_losers_stay_usable(pg_db_url: str) -> None:
    js = journals(pg_db_url, 3)
    js[0].start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    for k in range(10):  # three writers, same slot, different client ids: exactly one wins each time
        got = race(3, lambda i, k=k: js[i].add_intent(intent(f"c{k}-{i}", slot=f"s{k}")))
        assert sum(r is None for r in got) == 1, got
        assert all(r is None or isinstance(r, DuplicateIntent) for r in got), got
    # a refused insert left no aborted transaction behind: every journal still writes and reads
    for i, j in enumerate(js):
        j.add_intent(intent(f"after-{i}", slot=f"after-{i}"))
        assert j.get_intent(f"after-{i}") is not None
    with js[0].engine.connect() as c:
        per_slot = c.execute(
            sa.select(order_intents.c.slot, sa.func.count()).group_by(order_intents.c.slot)
        ).all()
    assert len(per_slot) == 13 and all(n == 1 for _, n in per_slot)


def test_fast_path_stores_naive_utc_and_exact_decimals_on_postgresql(pg_db_url: str) -> None:
    j = Journal(engine=make_engine(pg_db_url))
    j.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    j.add_intent(intent("c1"))
    later = T0 + dt.timedelta(seconds=2)
    fill = Order(
        "c1", "B1", INS, Side.BUY, 75, OrderType.LIMIT, Product.MIS, OrderStatus.FILLED,
        filled_quantity=75, average_price=Decimal("24000.0333"), price=Decimal("24000.05"),
    )  # fmt: skip
    j.record_order(fill, later)
    with j.engine.connect() as c:
        kinds = dict(c.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'order_intents'"
        )).all())  # fmt: skip
        created, avg = c.exec_driver_sql("SELECT created_at, average_price FROM order_intents").one()
    assert kinds["created_at"] == "timestamp without time zone" and kinds["price"] == "character varying"
    assert created == dt.datetime(2026, 3, 2, 3, 50, 0, 123456)  # naive UTC, microseconds kept
    assert avg == "24000.0333"
    got = j.get_intent("c1")
    assert got is not None and got.created_at == T0 and got.created_at.tzinfo is dt.UTC
    assert got.average_price == Decimal("24000.0333") and got.status is OrderStatus.FILLED
    assert j.last_activity("r1") == later  # func.max over a UTCDateTime column, aware again
    assert [r.run_id for r in j.find_runs("r")] == ["r1"]
    assert j.list_runs()[0].started_at == T0


def test_a_second_connection_never_sees_an_uncommitted_intent(pg_db_url: str) -> None:
    writer, reader = journals(pg_db_url, 2)
    writer.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    from runner.journal.fastpath import INS_INTENT
    from runner.journal.records import intent_values

    with writer._fast.transaction() as t:
        t.execute(INS_INTENT, intent_values(intent("c1")))
        assert reader.get_intent("c1") is None  # inside the writer's open transaction
        assert writer.get_intent("c1") is not None  # same connection sees its own row
    assert reader.get_intent("c1") is not None


def test_run_rows_round_trip_through_core_and_fast_paths(pg_db_url: str) -> None:
    j = Journal(engine=make_engine(pg_db_url))
    j.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    rec = j.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="run", now=T0)
    assert rec.resumed and rec.starts == 2
    with pytest.raises(JournalError, match="belongs to account"):
        j.start_run("r1", playbook="p", account="b", scheduled_for=T0, mode="run", now=T0)
    with j.engine.connect() as c:
        row = c.execute(sa.select(runs)).mappings().one()
    assert dataclasses.asdict(j.get_run("r1") or rec)["starts"] == row["starts"] == 2


def test_processes_starting_together_create_the_schema_once(pg_db_url: str) -> None:
    """runner.journal.db.create_all: what Journal/FireStore/ControlStore/PaperStore need on a fresh database
    (their own ``metadata.create_all`` races, see the xfail in test_pg_paper)."""
    from runner.brokers.paper import broker as paper
    from runner.engine import killswitch as control
    from runner.journal import fires, tables
    from runner.journal.db import create_all

    engines = [make_engine(pg_db_url) for _ in range(4)]
    metas = (tables.metadata, fires.metadata, control.metadata, paper.metadata)
    got = race(4, lambda i: [create_all(engines[i], m) for m in metas])
    assert [r for r in got if isinstance(r, Exception)] == []
    with engines[0].connect() as c:
        tables = set(sa.inspect(c).get_table_names())
    assert {"runs", "order_intents", "fires", "daemons", "control", "paper_orders"} <= tables
