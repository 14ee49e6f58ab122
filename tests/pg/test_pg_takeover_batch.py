"""Issue 16: a dead holder's claims are taken over and their old runs cleared in batches (one statement
per kind, not several queries and commits per fire), on a real PostgreSQL. A run armed by the old holder
is discarded so it is re-armed under the same run id and client order ids; one it only opened is closed
STOPPED; a touched one is kept; one the old holder (alive, its lease lost) writes to meanwhile is kept
out of the discard, and one it re-opens after the batch is cleared again as before (``_taken_run_busy``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from helpers.engine import NIFTY_FUT

from runner.daemon.leasing import LeaseBook
from runner.daemon.membership import Membership
from runner.daemon.scaleout import ScaleOut
from runner.daemon.scheduler import Daemon
from runner.journal import claim_leases
from runner.journal.db import make_engine
from runner.journal.fastpath import CALL_COLUMNS
from runner.journal.fires import Claim, FireRow, FireStore
from runner.journal.records import Intent, Purpose
from runner.journal.store import Journal
from runner.journal.tables import RunStatus
from runner.liveness import db_clock
from runner.model import OrderRequest, OrderType, Side

HOLDER = "daemon-a"


def _claimed(engine: sa.Engine, runs: list[str]) -> tuple[FireStore, list[FireRow]]:
    """Claims of ``HOLDER`` for ``runs`` whose leases lapsed before their instant; taken over by b."""
    with engine.connect() as conn:
        now = db_clock(conn)
    holder = FireStore(engine, HOLDER)
    holder.lease_seconds = 0.05
    claims = [Claim(f"pb-{r}", "v1", now + dt.timedelta(seconds=30), r) for r in runs]
    assert holder.claim_many(claims, now) == {c.fire_id for c in claims}
    time.sleep(0.1)  # the leases lapse (database clock), well before the instant
    survivor = FireStore(engine, "daemon-b")
    rows = claim_leases.takeable(survivor)
    assert len(rows) == len(runs)
    assert claim_leases.take_over_many(survivor, rows, now, 5.0) == {c.fire_id for c in claims}
    return survivor, rows


def _dead_holders_claims(engine: sa.Engine, n: int) -> tuple[dt.datetime, list[Claim]]:
    """``n`` claims of ``HOLDER``, which died: their leases lapse (database clock) well before the instant."""
    with engine.connect() as conn:
        now = db_clock(conn)
    holder = FireStore(engine, HOLDER)
    holder.lease_seconds = 0.05
    claims = [Claim(f"pb{i}", "v1", now + dt.timedelta(seconds=30), f"r{i}") for i in range(n)]
    assert len(holder.claim_many(claims, now)) == n
    time.sleep(0.1)
    return now, claims


def _arm(journal: Journal, run_id: str, cids: tuple[str, ...] = (), owner: str = HOLDER) -> None:
    now = dt.datetime.now(dt.UTC)
    journal.start_run(run_id, playbook=f"pb-{run_id}", account="paper", scheduled_for=now, mode="serve",
                      now=now, owner=owner)  # fmt: skip
    for i, cid in enumerate(cids):
        req = OrderRequest(cid, NIFTY_FUT, Side.BUY, 75, OrderType.LIMIT, price=Decimal("24000"))
        journal.add_intent(Intent(cid, run_id, "paper", "bid", "bid", i, 0, Purpose.ENTRY, req, now))


def test_take_over_many_is_one_compare_and_set_per_row_and_notes_the_old_holder(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    _, rows = _claimed(engine, ["r1", "r2"])
    again = FireStore(engine, "daemon-c")
    assert claim_leases.take_over_many(again, rows, rows[0].claimed_at, 5.0) == set()  # b has them
    with engine.connect() as conn:
        got = conn.execute(sa.text("select claimed_by, taken_from from fires")).all()
    assert sorted(got) == [("daemon-b", HOLDER)] * 2


def test_the_batch_discards_armed_runs_closes_opened_ones_and_keeps_touched_ones(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    journal = Journal(engine=engine)
    runs = [f"r{i}" for i in range(40)]
    _, rows = _claimed(engine, runs)
    for i, run_id in enumerate(runs):
        if i % 4 == 0:
            _arm(journal, run_id, (f"c{i}",))  # armed: run + one untouched intent
        elif i % 4 == 1:
            _arm(journal, run_id)  # opened, nothing armed
        elif i % 4 == 2:  # armed, and its request journaled as sent: never discarded
            _arm(journal, run_id, (f"c{i}",))
            call = {"run_id": run_id, "client_order_id": f"c{i}", "method": "place"}
            journal.record_call(dict.fromkeys(CALL_COLUMNS) | call | {"at": dt.datetime.now(dt.UTC)})
        # i % 4 == 3: no run yet
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    kept = claim_leases.clear_unsent_runs(engine, rows, dt.datetime.now(dt.UTC))
    assert len(statements) <= 8, statements  # a few per kind, whatever the number of fires
    assert kept == {f"r{i}" for i in range(2, 40, 4)}
    for i, run_id in enumerate(runs):
        run = journal.get_run(run_id)
        if i % 4 == 0:
            assert run is None and journal.get_intent(f"c{i}") is None
        elif i % 4 in (1, 2):
            assert run is not None and run.status is RunStatus.STOPPED
            assert run.message is not None and f"taken over from {HOLDER}" in run.message
        else:
            assert run is None
    # a discarded run is armed afresh under the same run id and client order id
    _arm(journal, "r0", ("c0",), owner="daemon-b")
    assert journal.get_intent("c0") is not None


def test_a_run_the_old_holder_arms_more_into_meanwhile_is_kept_not_discarded(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    journal = Journal(engine=engine)
    _, rows = _claimed(engine, ["r1", "r2"])
    _arm(journal, "r1", ("c1",))
    _arm(journal, "r2", ("c2",))
    other = Journal(engine=make_engine(pg_db_url))
    raced: list[bool] = []

    def old_holder_writes(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith("DELETE FROM order_intents") and not raced:
            raced.append(True)  # the old holder, alive but slow, arms a second leg of r1 (committed)
            now = dt.datetime.now(dt.UTC)
            req = OrderRequest("c1b", NIFTY_FUT, Side.BUY, 75, OrderType.LIMIT, price=Decimal("24000"))
            other.add_intent(Intent("c1b", "r1", "paper", "bid", "bid", 1, 0, Purpose.ENTRY, req, now))

    sa.event.listen(engine, "before_cursor_execute", old_holder_writes)
    kept = claim_leases.clear_unsent_runs(engine, rows, dt.datetime.now(dt.UTC))
    assert raced and kept == {"r1"}
    r1 = journal.get_run("r1")
    assert r1 is not None and r1.status is RunStatus.STOPPED  # nothing of it discarded
    assert journal.get_intent("c1") is not None and journal.get_intent("c1b") is not None
    assert journal.get_run("r2") is None and journal.get_intent("c2") is None  # the rest redone


def test_a_run_the_old_holder_reopens_after_the_batch_is_cleared_again_while_our_lease_holds(
    pg_db_url: str,
) -> None:
    engine = make_engine(pg_db_url)
    journal = Journal(engine=engine)
    _, rows = _claimed(engine, ["r1"])
    (row,) = rows
    _arm(journal, "r1", ("c1",))
    assert claim_leases.clear_unsent_runs(engine, rows, dt.datetime.now(dt.UTC)) == set()
    assert journal.get_run("r1") is None
    _arm(journal, "r1", ("c1",))  # the old holder, alive, arms it again after the batch
    mono = [100.0]
    leases = LeaseBook(mono=lambda: mono[0])
    leases.granted([row.fire_id], leases.stamp())
    daemon = SimpleNamespace(
        _taken={row.fire_id: row}, leases=leases, _run_journal=lambda: journal,
        clock=SimpleNamespace(now=lambda: dt.datetime.now(dt.UTC)),
    )  # fmt: skip
    fire = SimpleNamespace(fire_id=row.fire_id)
    assert asyncio.run(Daemon._taken_run_busy(daemon, fire))  # type: ignore[arg-type]
    assert journal.get_run("r1") is None and journal.get_intent("c1") is None  # re-armed by us next
    mono[0] += leases.lease  # our lease lapsed: hands off, preparing is not retried
    _arm(journal, "r1", ("c1",))
    assert not asyncio.run(Daemon._taken_run_busy(daemon, fire))  # type: ignore[arg-type]
    assert journal.get_intent("c1") is not None


def test_a_survivor_takes_and_clears_a_dead_holders_claims_in_one_go_before_rearming_any(
    pg_db_url: str,
) -> None:
    engine = make_engine(pg_db_url)
    now, claims = _dead_holders_claims(engine, 30)
    order: list[str] = []

    async def take(row: FireRow) -> None:
        order.append(f"take {row.fire_id}")

    def clear(rows: list[FireRow]) -> None:
        order.append(f"clear {len(rows)}")

    survivor = FireStore(engine, "daemon-b")
    membership = Membership("daemon-b", partitioned=True)
    membership.update([HOLDER, "daemon-b"])  # the survivor succeeds to every claim of the dead holder
    scale = ScaleOut(survivor, membership, LeaseBook(), lambda: now, take, lambda: None)
    scale.clear = clear

    async def look() -> list[FireRow]:
        rows = await scale.take_over_once()
        await asyncio.gather(*scale.tasks)
        return rows

    assert len(asyncio.run(look())) == 30
    assert order[0] == "clear 30" and len(order) == 31  # cleared once, for all, before any re-arming
    assert all(scale.leases.sendable(c.fire_id) for c in claims)


def test_claims_found_lapsed_are_outstanding_late_sends_from_the_look_until_each_take_ends(
    pg_db_url: str, monkeypatch: Any
) -> None:
    """The survivor's answered fires hold their follow-ups back for the taken ones (LateSends): noted on
    the takeover's thread before the compare-and-set, cleared as each take ends, and at once for a claim
    another survivor won between the look and the compare-and-set."""
    engine = make_engine(pg_db_url)
    now, _ = _dead_holders_claims(engine, 10)
    survivor = FireStore(engine, "daemon-b")
    rival = FireStore(engine, "daemon-c")
    noted: list[int] = []
    take_over_many = claim_leases.take_over_many

    def rival_first(store: FireStore, rows: list[FireRow], *args: Any) -> set[str]:
        noted.append(scale.late.outstanding())
        assert len(take_over_many(rival, rows[:2], *args)) == 2  # another survivor wins two first
        return take_over_many(store, rows, *args)

    monkeypatch.setattr(claim_leases, "take_over_many", rival_first)
    seen: list[int] = []

    async def take(row: FireRow) -> None:
        seen.append(scale.late.outstanding())
        await asyncio.sleep(0)

    membership = Membership("daemon-b", partitioned=True)
    membership.update([HOLDER, "daemon-b"])
    scale = ScaleOut(survivor, membership, LeaseBook(), lambda: now, take, lambda: None)

    async def look() -> int:
        rows = await scale.take_over_once()
        assert len(rows) == 8 and scale.late.outstanding() == 8  # the two lost ones dropped at once
        await asyncio.gather(*scale.tasks)
        await asyncio.sleep(0)
        return scale.late.outstanding()

    assert asyncio.run(look()) == 0
    assert noted == [10]  # noted before the compare-and-set
    assert seen[0] == 8  # every claim taken still outstanding when the first take ran
