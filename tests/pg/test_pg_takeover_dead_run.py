"""Dead-run closing on PostgreSQL (issue 16 defect): a dead holder's run whose fire claim lapsed no later
than its instant, or is still leased, is left to the takeover; one whose lease lapsed after its instant
(may have been sent) is closed for the lookup path as before."""

from __future__ import annotations

import datetime as dt
import subprocess

from runner.journal.db import make_engine
from runner.journal.fires import Claim, FireStore, fires
from runner.journal.store import Journal
from runner.journal.tables import RunStatus
from runner.liveness import ProcessIdentity, db_clock, host_id


def _dead_token() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return ProcessIdentity(host_id(), proc.pid, "1").token


def test_dead_runs_whose_claims_the_takeover_owns_are_left_open(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    journal = Journal(engine=engine)
    holder = FireStore(engine, "daemon-a")
    with engine.connect() as conn:
        now = db_clock(conn)
    s = dt.timedelta(seconds=1)
    cases = {  # run id -> (instant, lease expiry): the holder is dead in every case
        "lapsed-before": (now - s, now - 2 * s),
        "lapsed-after": (now - 3 * s, now - 2 * s),
        "still-leased": (now - s, now + 30 * s),
    }
    for run_id, (instant, expires) in cases.items():
        assert holder.claim_many([Claim(run_id, "v1", instant, run_id)], now)
        with engine.begin() as c:
            c.execute(fires.update().where(fires.c.run_id == run_id).values(lease_expires=expires))
        journal.start_run(
            run_id, playbook=run_id, account="acct", scheduled_for=instant, mode="serve", now=now,
            owner=_dead_token(),
        )  # fmt: skip
    closed = journal.close_dead_runs("acct", now, closer="run x")
    assert [r.run_id for r in closed] == ["lapsed-after"]
    assert journal.get_run("lapsed-before").status is RunStatus.RUNNING
    assert journal.get_run("still-leased").status is RunStatus.RUNNING
    engine.dispose()
