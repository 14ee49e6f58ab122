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
        mine = _locked(
            conn,
            fires.c.fire_id.in_(list(fire_ids)),
            fires.c.claimed_by == store.owner,
            fires.c.state == FireState.CLAIMED,
        )
        if mine:
            conn.execute(fires.update().where(fires.c.fire_id.in_(mine)).values(lease_expires=expires))
        return set(mine)


RENEW_AFTER_INSTANT = dt.timedelta(seconds=10)  # past its instant plus this, a claim's lease is left alone


def renew_held(store: FireStore, seconds: float) -> set[str]:
    """Extend every live lease this owner holds on a CLAIMED fire to now + ``seconds`` (database clock),
    found in the journal, not in a list the event loop keeps: a claim the loop has not taken note of yet
    (its claim's result still queued behind preparing work) keeps its lease too. A lapsed lease is never
    revived (a survivor may be taking it over), nor one well past its instant. Returns the fire ids."""
    with store.engine.begin() as conn:
        now = db_clock(conn)
        mine = _locked(
            conn,
            fires.c.claimed_by == store.owner,
            fires.c.state == FireState.CLAIMED,
            fires.c.lease_expires > now,
            fires.c.scheduled_for > now - RENEW_AFTER_INSTANT,
        )
        if mine:
            conn.execute(
                fires.update()
                .where(fires.c.fire_id.in_(mine))
                .values(lease_expires=now + dt.timedelta(seconds=seconds))
            )
        return set(mine)


def _locked(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> list[str]:
    """The fire ids matching ``where``, their rows locked in fire-id order: every multi-row write to
    ``fires`` locks in that one order (claims, state batches, renewals, takeovers), as two orders over
    one set of rows deadlock on PostgreSQL. (SQLite has one writer: FOR UPDATE is not rendered.)"""
    q = sa.select(fires.c.fire_id).where(*where).order_by(fires.c.fire_id).with_for_update()
    return list(conn.scalars(q))


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
    """:func:`take_over` for many claims in ONE statement (a dead holder's 353 claims took 7.6 s one
    commit each, past the 2 s the survivors have): each row still a compare-and-set on its holder and
    expiry as read, matched as a tuple. Returns the fire ids won."""
    if not rows:
        return set()
    expected = [(row.fire_id, row.claimed_by, row.lease_expires) for row in rows]
    with store.engine.begin() as conn:
        expires = db_clock(conn) + dt.timedelta(seconds=seconds)
        match = sa.tuple_(fires.c.fire_id, fires.c.claimed_by, fires.c.lease_expires).in_(expected)
        ours = _locked(conn, match, fires.c.state == FireState.CLAIMED)
        if not ours:
            return set()
        done = conn.execute(
            fires.update()
            .where(fires.c.fire_id.in_(ours), match, fires.c.state == FireState.CLAIMED)
            .values(
                claimed_by=store.owner,
                claimed_at=now,
                lease_expires=expires,
                taken_from=fires.c.claimed_by,  # the holder matched: SET reads the row as it was
                updated_at=now,
            )
            .returning(fires.c.fire_id)
        )
        return set(done.scalars())


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


class _Raced(Exception):
    """The old holder wrote to some of the runs being cleared meanwhile: those are kept, the rest redone."""

    def __init__(self, run_ids: set[str]) -> None:
        super().__init__(", ".join(sorted(run_ids)))
        self.run_ids = run_ids


def clear_unsent_runs(engine: sa.Engine, rows: Sequence[FireRow], now: dt.datetime) -> set[str]:
    """:func:`runner.daemon.scaleout.clear_unsent_run` for many claims taken over, in ONE transaction of
    a few statements, not several queries and commits per fire: a run armed by the old holder (one
    untouched intent: PENDING_NEW, no broker order id, no broker call) is deleted with its steps, so it
    is armed afresh under the same run id and client order ids; any other run still RUNNING is closed
    STOPPED (reopened by the new holder). Returns the run ids that kept an armed intent (touched, or one
    of several): the caller says so."""
    by_run = {row.run_id: row for row in rows}
    kept: set[str] = set()
    for _ in range(3):  # a race with the old holder (alive, its lease lost) is rare: redo without its runs
        try:
            with engine.begin() as conn:
                return _clear(conn, by_run, now, kept)
        except _Raced as raced:
            kept |= raced.run_ids
    raise AssertionError("unreachable: each retry keeps more runs out of the discard")


def _clear(conn: sa.Connection, by_run: dict[str, FireRow], now: dt.datetime, keep: set[str]) -> set[str]:
    from runner.journal.tables import RunStatus, broker_calls, order_intents, runs, steps
    from runner.model import OrderStatus

    oi = order_intents.c
    pending = OrderStatus.PENDING_NEW.value
    present = set(conn.scalars(sa.select(runs.c.run_id).where(runs.c.run_id.in_(list(by_run)))))
    if not present:
        return set()
    called = sa.exists().where(broker_calls.c.client_order_id == oi.client_order_id)
    untouched = sa.and_(oi.status == pending, oi.broker_order_id.is_(None), ~called)
    intents: dict[str, list[tuple[str, bool]]] = {}  # run id -> its intents: client id, untouched
    armed: set[str] = set()  # runs with a PENDING_NEW intent
    q = sa.select(oi.run_id, oi.client_order_id, oi.status, untouched.label("untouched"))
    for run_id, cid, status, clean in conn.execute(q.where(oi.run_id.in_(list(present)))):
        intents.setdefault(run_id, []).append((cid, bool(clean)))
        if status == pending:
            armed.add(run_id)
    # one intent, untouched: the run is discarded (two or more, e.g. a spread's legs: kept, as one by one)
    one = {r: m[0][0] for r, m in intents.items() if len(m) == 1 and m[0][1] and r not in keep}
    discard = set(one)
    if discard:
        # by client id, as read: an intent the old holder adds meanwhile is left, found below, redone
        gone = conn.scalars(
            order_intents.delete()
            .where(oi.client_order_id.in_(list(one.values())), oi.run_id.in_(list(discard)), untouched)
            .returning(oi.run_id)
        )
        done = set(gone)
        left = set(conn.scalars(sa.select(oi.run_id).where(oi.run_id.in_(list(discard)))))
        if done != discard or left:
            raise _Raced((discard - done) | left)
        conn.execute(steps.delete().where(steps.c.run_id.in_(list(discard))))
        conn.execute(runs.delete().where(runs.c.run_id.in_(list(discard))))
    stay = present - discard
    for holder in {by_run[r].claimed_by for r in stay}:
        why = f"claim taken over from {holder} (its lease lapsed before the instant; nothing sent)"
        mine = [r for r in stay if by_run[r].claimed_by == holder]
        conn.execute(
            runs.update()
            .where(runs.c.run_id.in_(mine), runs.c.status == RunStatus.RUNNING.value)
            .values(status=RunStatus.STOPPED.value, finished_at=now, updated_at=now, message=why)
        )
    return armed & stay
