"""Claim leases on PostgreSQL (issue 16): a lapsed unsent claim is taken over by compare-and-set, once;
one whose lease lapsed after its instant (may have been sent) is never taken over; the old holder can
neither renew nor give up a claim taken from it; ``runner status`` shows members and claims in flight."""

from __future__ import annotations

import datetime as dt
import time

from runner.daemon.membership import read_members
from runner.daemon.scale_status import scale_view
from runner.journal import claim_leases
from runner.journal.db import make_engine
from runner.journal.fires import Claim, FireState, FireStore
from runner.liveness import db_clock


def _stores(url: str) -> tuple[FireStore, FireStore, FireStore]:
    engine = make_engine(url)
    return FireStore(engine, "a"), FireStore(engine, "b"), FireStore(engine, "c")


def _db_now(store: FireStore) -> dt.datetime:
    with store.engine.connect() as conn:
        return db_clock(conn)


def test_lapsed_unsent_claim_is_taken_over_once_and_the_old_holder_loses_it(pg_db_url: str) -> None:
    a, b, c = _stores(pg_db_url)
    now = _db_now(a)
    a.lease_seconds = 0.05
    claim = Claim("pb1", "v1", now + dt.timedelta(seconds=30), "run-1")
    assert a.claim_many([claim], now) == {claim.fire_id}
    time.sleep(0.1)  # the lease lapses (database clock), well before the instant
    (row,) = claim_leases.takeable(b)
    assert row.claimed_by == "a" and row.lease_expires is not None
    assert claim_leases.take_over(b, row, now, 5.0)
    assert not claim_leases.take_over(c, row, now, 5.0)  # the compare-and-set admits one survivor
    assert claim_leases.renew(a, [claim.fire_id], 5.0) == set()
    assert not claim_leases.give_up(a, claim.fire_id, claim.scheduled_for)
    taken = b.get(claim.fire_id)
    assert taken is not None and taken.claimed_by == "b" and taken.taken_from == "a"
    assert taken.state is FireState.CLAIMED and claim_leases.renew(b, [claim.fire_id], 5.0) == {claim.fire_id}


def test_a_lease_that_lapsed_after_the_instant_is_left_to_the_lookup(pg_db_url: str) -> None:
    a, b, _ = _stores(pg_db_url)
    now = _db_now(a)
    a.lease_seconds = 0.05
    claim = Claim("pb1", "v1", now - dt.timedelta(seconds=1), "run-1")  # holder may have sent at it
    a.claim_many([claim], now)
    time.sleep(0.1)
    assert claim_leases.takeable(b) == []


def test_a_holder_giving_up_unsent_makes_its_claim_takeable_at_the_instant(pg_db_url: str) -> None:
    a, b, _ = _stores(pg_db_url)
    now = _db_now(a)
    a.lease_seconds = 30.0
    claim = Claim("pb1", "v1", now - dt.timedelta(milliseconds=200), "run-1")
    a.claim_many([claim], now)
    assert claim_leases.takeable(b) == []  # a live lease
    assert claim_leases.give_up(a, claim.fire_id, claim.scheduled_for)
    assert [r.fire_id for r in claim_leases.takeable(b)] == [claim.fire_id]


def test_status_shows_members_their_playbooks_and_claims_in_flight(pg_db_url: str) -> None:
    a, b, _ = _stores(pg_db_url)
    now = _db_now(a)
    a.register_daemon("h", 1, "/pb", now)
    b.register_daemon("h", 2, "/pb", now)
    a.lease_seconds = 30.0
    a.claim_many([Claim("pb1", "v1", now + dt.timedelta(seconds=5), "run-1")], now)
    assert read_members(a.engine) == ["a", "b"]
    names = {f"pb{i}": {} for i in range(40)}
    view = scale_view(a.engine, [{"alive": True, "playbooks": names}])
    assert sorted(m["daemon_id"] for m in view["members"]) == ["a", "b"]
    assert sum(m["owns"] for m in view["members"]) == 40 and all(m["sample"] for m in view["members"])
    (flight,) = view["claims_in_flight"]
    assert flight["holder"] == "a" and flight["lease_expires"] is not None and flight["state"] == "claimed"


def test_renew_held_extends_only_this_owners_live_claims(pg_db_url: str) -> None:
    """What the renewal thread writes: every live CLAIMED lease of this owner, found in the journal; a
    lapsed one is never revived (a survivor may be taking it over), another owner's is not touched."""
    a, b, _ = _stores(pg_db_url)
    now = _db_now(a)
    a.lease_seconds = 30.0
    live = Claim("pb1", "v1", now + dt.timedelta(seconds=30), "run-1")
    a.claim_many([live], now)
    a.lease_seconds = 0.05
    lapsed = Claim("pb2", "v1", now + dt.timedelta(seconds=30), "run-2")
    a.claim_many([lapsed], now)
    b.lease_seconds = 30.0
    other = Claim("pb3", "v1", now + dt.timedelta(seconds=30), "run-3")
    b.claim_many([other], now)
    time.sleep(0.1)
    assert claim_leases.renew_held(a, 5.0) == {live.fire_id}
    assert [r.fire_id for r in claim_leases.takeable(b)] == [lapsed.fire_id]


def test_many_lapsed_claims_are_taken_over_in_one_commit_each_still_compare_and_set(pg_db_url: str) -> None:
    """A dead holder's hundreds of claims: one transaction, not one commit each (7.6 s for 353 under
    load, past the 2 s the survivors have); a claim another survivor took first is not won again."""
    import sqlalchemy as sa

    a, b, c = _stores(pg_db_url)
    now = _db_now(a)
    a.lease_seconds = 0.05
    claims = [Claim(f"pb{i}", "v1", now + dt.timedelta(seconds=30), f"run-{i}") for i in range(20)]
    assert len(a.claim_many(claims, now)) == 20
    time.sleep(0.1)
    rows = claim_leases.takeable(b)
    assert len(rows) == 20
    assert claim_leases.take_over(c, rows[0], now, 5.0)  # another survivor won this one first
    commits = 0

    def count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    sa.event.listen(b.engine, "commit", count)
    try:
        won = claim_leases.take_over_many(b, rows, now, 5.0)
    finally:
        sa.event.remove(b.engine, "commit", count)
    assert commits == 1
    assert won == {r.fire_id for r in rows[1:]}
