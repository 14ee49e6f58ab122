"""The dead-daemon sweep (issue 16): a dead holder's claim whose lease lapsed no later than its instant was
provably never sent, so the sweep leaves it takeable (a survivor takes it over and judges it by its
``late:`` policy) instead of marking it UNKNOWN because no survivor had taken it yet; a claim whose lease
lapsed after its instant may have been sent and is still marked UNKNOWN, as before."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from runner.daemon.catchup import mark_interrupted
from runner.journal import claim_leases
from runner.journal.db import make_engine
from runner.journal.fires import Claim, FireState, FireStore, fires
from runner.journal.store import Journal


def _claim_with_run(
    store: FireStore, journal: Journal, name: str, instant: dt.datetime, lapsed_at: dt.datetime
) -> str:
    claim = Claim(name, "v1", instant, f"run-{name}")
    assert store.claim_many([claim], instant - dt.timedelta(seconds=1.5)) == {claim.fire_id}
    journal.start_run(
        claim.run_id, playbook=name, account="paper", scheduled_for=instant, mode="paper", now=instant
    )  # armed before its instant: the holder's run is journaled
    with store.engine.begin() as conn:
        conn.execute(fires.update().where(fires.c.fire_id == claim.fire_id).values(lease_expires=lapsed_at))
    return claim.fire_id


def test_the_sweep_leaves_a_provably_unsent_lapsed_claim_takeable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    dead = FireStore(engine, "dead")
    dead.lease_seconds = 1.0
    journal = Journal(engine=engine)
    instant = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=20)
    unsent = _claim_with_run(dead, journal, "unsent", instant, instant - dt.timedelta(seconds=0.5))
    maybe = _claim_with_run(dead, journal, "maybe", instant, instant + dt.timedelta(seconds=0.4))

    survivor = FireStore(engine, "alive")
    items = mark_interrupted(survivor, instant + dt.timedelta(seconds=20), lambda _: {"dead"})

    assert [i.playbook for i in items] == ["maybe"]  # may have been sent: UNKNOWN, looked up as before
    row = survivor.get(maybe)
    assert row is not None and row.state is FireState.UNKNOWN
    row = survivor.get(unsent)
    assert row is not None and row.state is FireState.CLAIMED and row.claimed_by == "dead"
    assert [r.fire_id for r in claim_leases.takeable(survivor)] == [unsent]  # the survivor takes it over
    run = journal.get_run(row.run_id)
    assert run is not None and run.status.value == "running"  # its armed run is the takeover's to clear
