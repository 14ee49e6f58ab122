"""Writes to many fire rows at once take their row locks in one order (fire id) on PostgreSQL.

At the instant a daemon's lease-renewal thread updates every claim it holds (``renew_held``, in the
table's scan order) while its claim batcher marks a batch of the same fires RUNNING (in queue order):
two orders over one set of rows deadlocked, PostgreSQL aborted one, and the daemon took the aborted
write for the journal going away (a kill -9 run at 1,000 fires: "journal unreachable ... deadlock
detected"). Each writer here runs in a loop of its own against the other, over rows locked in opposite
orders; none may ever be chosen as a deadlock victim.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg.errors
import sqlalchemy.exc

from runner.journal import claim_leases
from runner.journal.db import make_engine
from runner.journal.fires import Claim, ClaimBatcher, FireState, FireStore
from runner.liveness import db_clock

ROWS = 150
ROUNDS = 12


def _deadlocks(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "orig", None), psycopg.errors.DeadlockDetected)


def test_renewal_and_state_batches_never_deadlock(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    store = FireStore(engine, "d1")
    store.lease_seconds = 30.0
    with engine.connect() as conn:
        now = db_clock(conn)
    claims = [Claim(f"pb{i:03d}", "v1", now + dt.timedelta(seconds=60), f"run-{i}") for i in range(ROWS)]
    assert len(store.claim_many(claims, now)) == ROWS
    batcher = ClaimBatcher(store)
    ids = sorted(c.fire_id for c in claims)
    errors: list[BaseException] = []
    stop = threading.Event()

    def renewing() -> None:
        while not stop.is_set():
            try:
                claim_leases.renew_held(store, 30.0)
                claim_leases.renew(store, list(reversed(ids)), 30.0)
            except sqlalchemy.exc.DBAPIError as exc:
                errors.append(exc)

    thread = threading.Thread(target=renewing)
    thread.start()
    try:
        for k in range(ROUNDS):
            order = ids if k % 2 else list(reversed(ids))  # queue order, not the table's
            state = FireState.RUNNING if k < ROUNDS - 1 else FireState.CLAIMED
            states = [{"fid": f, "state": state, "outcome": None, "now": now} for f in order]
            try:
                batcher._write_states(states)
                batcher._write_states([{**s, "state": FireState.CLAIMED} for s in states])
            except sqlalchemy.exc.DBAPIError as exc:
                errors.append(exc)
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert not [e for e in errors if _deadlocks(e)], errors[:1]
    assert not errors, errors[:1]
