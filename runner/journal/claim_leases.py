"""Fire claims as leases (issue 16): renew, give up, find and take over unsent claims.

A claim's ``lease_expires`` is on the database's clock. The holder renews it while preparing and never
sends once it has lapsed (judged locally: :mod:`runner.daemon.leasing`). A claim still CLAIMED whose
lease lapsed no later than its instant cannot have been sent (the holder sends at the instant or after,
and only while its lease holds), so a survivor may take it over by a compare-and-set on holder and
expiry. One whose lease lapsed after its instant may have been sent: it is left to the lookup path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from runner.journal.fires import FireRow, FireState, FireStore, fires, read
from runner.liveness import db_clock


def renew(store: FireStore, fire_ids: Sequence[str], seconds: float) -> set[str]:
    """Extend this owner's CLAIMED leases among ``fire_ids`` to now + ``seconds`` (database clock);
    returns those still held (one taken over meanwhile is not)."""
    if not fire_ids:
        return set()
    with store.engine.begin() as conn:
        expires = db_clock(conn) + dt.timedelta(seconds=seconds)
        conn.execute(
            fires.update()
            .where(
                fires.c.fire_id.in_(list(fire_ids)),
                fires.c.claimed_by == store.owner,
                fires.c.state == FireState.CLAIMED,
            )
            .values(lease_expires=expires)
        )
        held = conn.scalars(
            sa.select(fires.c.fire_id).where(
                fires.c.fire_id.in_(list(fire_ids)),
                fires.c.claimed_by == store.owner,
                fires.c.lease_expires == expires,
            )
        )
        return set(held)


RENEW_AFTER_INSTANT = dt.timedelta(seconds=10)  # past its instant plus this, a claim's lease is left alone


def renew_held(store: FireStore, seconds: float) -> set[str]:
    """Extend every live lease this owner holds on a CLAIMED fire to now + ``seconds`` (database clock),
    found in the journal, not in a list the event loop keeps: a claim the loop has not taken note of yet
    (its claim's result still queued behind preparing work) keeps its lease too. A lapsed lease is never
    revived (a survivor may be taking it over), nor one well past its instant. Returns the fire ids."""
    with store.engine.begin() as conn:
        now = db_clock(conn)
        done = conn.execute(
            fires.update()
            .where(
                fires.c.claimed_by == store.owner,
                fires.c.state == FireState.CLAIMED,
                fires.c.lease_expires > now,
                fires.c.scheduled_for > now - RENEW_AFTER_INSTANT,
            )
            .values(lease_expires=now + dt.timedelta(seconds=seconds))
            .returning(fires.c.fire_id)
        )
        return set(done.scalars())


def give_up(store: FireStore, fire_id: str, scheduled_for: dt.datetime) -> bool:
    """The holder's lease lapsed before it sent: say so (lease ended at the latest at the instant), so a
    survivor may take the claim over. Only while it is still ours and CLAIMED."""
    with store.engine.begin() as conn:
        done = conn.execute(
            fires.update()
            .where(
                fires.c.fire_id == fire_id,
                fires.c.claimed_by == store.owner,
                fires.c.state == FireState.CLAIMED,
                fires.c.lease_expires > scheduled_for,
            )
            .values(lease_expires=scheduled_for)
        )
    return bool(done.rowcount)


@dataclass(frozen=True)
class Scan:
    """One look for claims to take over: those takeable now, and when the next one may become so."""

    rows: list[FireRow]
    now: dt.datetime  # the database's clock at the look
    # The earliest live lease among other holders' unsent claims and ours given up (database clock);
    # None: nothing becomes takeable before a claim written after ``now`` could lapse.
    next_lapse: dt.datetime | None


def scan(store: FireStore, own: Sequence[str] = ()) -> Scan:
    """Other holders' unsent claims whose lease lapsed no later than their instant (database clock), and
    this daemon's own claims among ``own`` (given up unsent, known locally) whatever their lease says;
    with the earliest live lease among those that could become so (one read)."""
    others = sa.and_(
        fires.c.lease_expires <= fires.c.scheduled_for,
        fires.c.claimed_by != store.owner,
    )
    mine = sa.and_(fires.c.claimed_by == store.owner, fires.c.fire_id.in_(list(own)))
    with read(store.engine) as conn:
        now = db_clock(conn)
        rows = conn.execute(
            sa.select(fires).where(
                fires.c.state == FireState.CLAIMED,
                fires.c.lease_expires < now,
                sa.or_(others, mine) if own else others,
            )
        ).all()
        # any other holder's live lease: one running past its instant becomes takeable too if its
        # holder gives it up unsent (give_up), found by its expiry at the latest
        theirs = fires.c.claimed_by != store.owner
        nxt = conn.scalar(
            sa.select(sa.func.min(fires.c.lease_expires)).where(
                fires.c.state == FireState.CLAIMED,
                fires.c.lease_expires >= now,
                sa.or_(theirs, mine) if own else theirs,
            )
        )
    return Scan([FireRow(**r._asdict()) for r in rows], now, nxt)  # min() keeps the column's (aware) type


def lapsed_unsent(row: FireRow) -> bool:
    """The row's lease lapsed no later than its instant: never sent, takeable once lapsed (the rule
    :func:`scan` applies in SQL)."""
    return row.lease_expires is not None and row.lease_expires <= row.scheduled_for


def takeable(store: FireStore, own: Sequence[str] = ()) -> list[FireRow]:
    """The claims :func:`scan` finds takeable now."""
    return scan(store, own).rows


def take_over(store: FireStore, row: FireRow, now: dt.datetime, seconds: float) -> bool:
    """Compare-and-set on holder and expiry: the claim becomes ours with a fresh lease."""
    return row.fire_id in take_over_many(store, [row], now, seconds)


def take_over_many(
    store: FireStore, rows: Sequence[FireRow], now: dt.datetime, seconds: float
) -> set[str]:
    """:func:`take_over` for many claims in ONE transaction (a dead holder's 353 claims took 7.6 s one
    commit each, past the 2 s the survivors have); each still its own compare-and-set. Returns the fire
    ids won."""
    won: set[str] = set()
    if not rows:
        return won
    with store.engine.begin() as conn:
        expires = db_clock(conn) + dt.timedelta(seconds=seconds)
        for row in rows:
            done = conn.execute(
                fires.update()
                .where(
                    fires.c.fire_id == row.fire_id,
                    fires.c.claimed_by == row.claimed_by,
                    fires.c.lease_expires == row.lease_expires,
                    fires.c.state == FireState.CLAIMED,
                )
                .values(
                    claimed_by=store.owner,
                    claimed_at=now,
                    lease_expires=expires,
                    taken_from=row.claimed_by,
                    updated_at=now,
                )
            )
            if done.rowcount:
                won.add(row.fire_id)
    return won


def in_flight(store: FireStore, limit: int = 200) -> list[FireRow]:
    """Claims not finished yet (CLAIMED or RUNNING), soonest first: ``runner status``."""
    q = (
        sa.select(fires)
        .where(fires.c.state.in_([FireState.CLAIMED, FireState.RUNNING]))
        .order_by(fires.c.scheduled_for)
        .limit(limit)
    )
    with read(store.engine) as conn:
        return [FireRow(**r._asdict()) for r in conn.execute(q)]


def held_for_takeover(engine: sa.Engine, run_ids: Sequence[str]) -> set[str]:
    """Those of ``run_ids`` (runs whose process is gone) whose fire claim is still CLAIMED and either
    lapsed no later than its instant (provably unsent: a survivor takes it over and discards the armed
    run itself) or still leased (whoever holds it decides). Dead-run closing leaves them alone: closing
    one would let another run's reconcile look its armed order up, and a looked-up intent can no longer
    be discarded, so the takeover could not re-arm it. A lease lapsed after its instant is not held:
    that fire may have been sent and is settled by lookup."""
    if not run_ids or not sa.inspect(engine).has_table(fires.name):  # a journal no daemon used
        return set()
    with read(engine) as conn:
        now = db_clock(conn)
        held = conn.scalars(
            sa.select(fires.c.run_id).where(
                fires.c.run_id.in_(list(run_ids)),
                fires.c.state == FireState.CLAIMED,
                sa.or_(fires.c.lease_expires <= fires.c.scheduled_for, fires.c.lease_expires > now),
            )
        )
        return set(held)
