"""A claim whose lease lapsed during a journal outage (issue 16): the holder gives it up unsent, and once the
journal is back takes it back and judges it by its ``late:`` policy, never leaving it CLAIMED.

The defect this pins (seen in tests/pg/test_pg_outage.py ~2 runs in 5): renewals fail while PostgreSQL is
down, the lease lapses locally before the instant, and the forfeit first gave the account lease back
through the journal. That write raised, so the claim was never noted as forfeited (nor its give-up tried):
the fire task died with "Task exception was never retrieved" and the claim stayed CLAIMED for good, never
sent, never reported, while the daemon kept running."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from runner.clock import VirtualClock
from runner.daemon.leasing import LeaseBook
from runner.daemon.membership import Membership
from runner.daemon.release import Fire, FireResult, Release
from runner.daemon.scaleout import ScaleOut
from runner.journal import claim_leases
from runner.journal.db import make_engine
from runner.journal.fires import Claim, ClaimBatcher, FireRow, FireState, FireStore, fires

OUTAGE = sqlite3.OperationalError("unable to open database file")  # what the journal going away raises


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class DownPrepared:
    """A prepared run whose forfeit writes to the journal (the account lease's release): it is down."""

    def __init__(self) -> None:
        self.ran = False

    async def run(self) -> FireResult:
        self.ran = True
        return FireResult(FireState.SUCCEEDED)

    def forfeit(self) -> None:
        raise OUTAGE

    async def abandon(self, reason: str, halted: bool) -> None:
        raise AssertionError("not abandoned: forfeited")


class Executor:
    def __init__(self) -> None:
        self.prepared = DownPrepared()

    async def prepare(self, fire: Fire) -> DownPrepared:
        return self.prepared

    async def __call__(self, fire: Fire) -> FireResult:
        raise AssertionError("prepared fires run through prepare()")


def _setup(tmp_path: Path) -> tuple[FireStore, Claim, VirtualClock]:
    engine = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    store = FireStore(engine, "a")
    store.lease_seconds = 1.0
    instant = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    claim = Claim("pb1", "v1", instant, "run-1")
    assert store.claim_many([claim], instant - dt.timedelta(seconds=1.5)) == {claim.fire_id}
    # the renewals failed while the journal was down: the lease lapsed before the instant
    with engine.begin() as conn:
        conn.execute(
            fires.update()
            .where(fires.c.fire_id == claim.fire_id)
            .values(lease_expires=instant - dt.timedelta(seconds=0.5))
        )
    return store, claim, VirtualClock(instant)


def test_a_lapsed_claim_forfeited_while_the_journal_is_down_is_taken_back_when_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, claim, clock = _setup(tmp_path)
    mono = Mono()
    leases = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    executor = Executor()
    release = Release(executor, ClaimBatcher(store), store, clock, lambda: None, lambda: None)
    release.leases = leases
    leases.granted([claim.fire_id], mono())
    mono.t += 5.0  # no renewal landed: the local deadline passed before the instant

    def give_up_down(*_: Any) -> bool:
        raise OUTAGE

    playbook: Any = SimpleNamespace(name="pb1")
    fire = Fire(playbook, tmp_path / "pb1.yaml", "v1", claim.scheduled_for, claim.run_id, claim.fire_id)
    with monkeypatch.context() as down:
        down.setattr(claim_leases, "give_up", give_up_down)
        asyncio.run(release.release(fire))  # the outage is handled, not raised out of the fire task

    assert not executor.prepared.ran, "a lapsed lease never sends"
    assert claim.fire_id in leases.forfeited
    row = store.get(claim.fire_id)
    assert row is not None and row.state is FireState.CLAIMED and row.claimed_by == "a"

    # the journal is back: the takeover scan takes our own forfeited claim back and re-arms it
    taken: list[FireRow] = []

    async def take(r: FireRow) -> None:
        taken.append(r)

    membership = Membership("a", partitioned=True)
    scale = ScaleOut(store, membership, leases, clock.now, take, lambda: None)

    async def scan() -> list[FireRow]:
        rows = await scale.take_over_once()
        await asyncio.gather(*scale.tasks)
        return rows

    assert [r.fire_id for r in asyncio.run(scan())] == [claim.fire_id]
    assert [r.fire_id for r in taken] == [claim.fire_id]
    assert claim.fire_id not in leases.forfeited
    with store.engine.connect() as conn:
        holder = conn.scalar(sa.select(fires.c.claimed_by).where(fires.c.fire_id == claim.fire_id))
    assert holder == "a"


class FailingStatesEngine:
    """The journal going away between a flush's claim transaction (committed) and its state writes."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.calls = 0

    def begin(self) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise OUTAGE
        return self.engine.begin()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_a_claim_that_committed_is_won_even_if_the_same_flushs_state_writes_fail(tmp_path: Path) -> None:
    """A claim's result must not be lost to a state write sharing its flush: reported failed, the fire is
    claimed again when the journal is back, loses to its own committed claim ("already claimed"), and
    the claim stays CLAIMED for good, never prepared, never sent, never reported."""
    engine = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    store = FireStore(engine, "a")
    now = dt.datetime.now(dt.UTC)
    done = Claim("pb0", "v1", now - dt.timedelta(seconds=1), "run-0")
    store.claim_many([done], now)
    claim = Claim("pb1", "v1", now + dt.timedelta(seconds=1.5), "run-1")
    batcher = ClaimBatcher(store)
    store.engine = FailingStatesEngine(engine)  # type: ignore[assignment]

    async def flush() -> tuple[Any, Any]:
        state = batcher.set_state_soon(done.fire_id, FireState.SUCCEEDED, None, now)  # the previous fire's
        won = asyncio.ensure_future(batcher.claim(claim, now))  # the next fire's claim, same flush
        results = await asyncio.gather(won, state, return_exceptions=True)
        return results[0], results[1]

    won, state = asyncio.run(flush())
    assert isinstance(state, sqlite3.OperationalError)  # the state write did fail, and says so
    assert won is True, won


def test_a_claim_whose_result_was_lost_is_ours_to_take_back_until_it_is_held_again() -> None:
    """The daemon notes a claim whose write raised in an outage as forfeited (it may have landed, its
    reply lost: then only we know it is unsent); claimed again and won, it is held, no longer forfeited
    (a held claim must never be taken back: it may be sending)."""
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    woken: list[bool] = []
    book.on_forfeit = lambda: woken.append(True)
    book.forfeit("f")
    assert book.forfeited == {"f"} and woken == [True]
    book.granted(["f"], book.stamp())
    assert book.forfeited == set() and book.sendable("f")


def test_the_forfeiting_fire_leaves_the_lease_of_its_claim_taken_back_meanwhile_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forfeit wakes the takeover look, which may take our own claim back (a fresh lease, a local
    deadline) while the forfeiting fire still waits for its give-up write; that fire's end must not drop
    the fresh deadline, or the re-armed fire would send with no lease check at all."""
    store, claim, clock = _setup(tmp_path)
    mono = Mono()
    leases = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    release = Release(Executor(), ClaimBatcher(store), store, clock, lambda: None, lambda: None)
    release.leases = leases
    leases.granted([claim.fire_id], mono())
    mono.t += 5.0

    def give_up_then_taken_back(*_: Any) -> bool:
        leases.granted([claim.fire_id], mono())  # the takeover look won it back meanwhile
        return True

    monkeypatch.setattr(claim_leases, "give_up", give_up_then_taken_back)
    playbook: Any = SimpleNamespace(name="pb1")
    fire = Fire(playbook, tmp_path / "pb1.yaml", "v1", claim.scheduled_for, claim.run_id, claim.fire_id)
    asyncio.run(release.release(fire))
    assert claim.fire_id in leases.deadlines  # the taken-back claim is still judged by its lease
    mono.t += 5.0
    assert not leases.sendable(claim.fire_id)
