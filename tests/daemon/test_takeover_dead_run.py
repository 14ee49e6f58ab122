"""Issue 16 defect: a survivor's other fire on the same account prepared after a holder's kill -9 closed
the dead holder's armed run and looked its order up, so the takeover could no longer discard it and the
fire was never sent. A claim whose lease lapsed no later than its instant belongs to the takeover; one
whose lease lapsed after it may have been sent and stays on the lookup path."""

from __future__ import annotations

import datetime as dt
import subprocess
from decimal import Decimal

from helpers.engine import NIFTY_FUT, make_env, playbook

from runner.daemon.scaleout import clear_unsent_run
from runner.journal import claim_leases
from runner.journal.fires import Claim, FireStore, fires
from runner.journal.records import Intent, Purpose
from runner.journal.tables import RunStatus
from runner.liveness import ProcessIdentity, host_id
from runner.model import OrderRequest, OrderType, Side

OTHER_FIRE = """
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
"""


def dead_token() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return ProcessIdentity(host_id(), proc.pid, "1").token


def _armed_by_dead_holder(env, lease_after_instant: dt.timedelta) -> FireStore:
    """Daemon a claimed a fire, armed its run (run row + PENDING_NEW intent) and was killed: its lease
    lapsed at instant + ``lease_after_instant`` (both in the past on the database's clock)."""
    db_now = env.journal.processes.db_now()
    instant = db_now - dt.timedelta(seconds=1)
    holder = FireStore(env.engine, "daemon-a")
    assert holder.claim_many([Claim("p1", "v1", instant, "r-armed")], db_now)
    with env.engine.begin() as c:
        c.execute(fires.update().values(lease_expires=instant + lease_after_instant))
    row = holder.slot("p1", instant)
    assert row is not None and row.lease_expires == instant + lease_after_instant
    now = env.clock.now()
    env.journal.start_run(
        "r-armed", playbook="p1", account="paper", scheduled_for=now, mode="serve", now=now,
        owner=dead_token(),
    )
    req = OrderRequest("c-armed", NIFTY_FUT, Side.BUY, 75, OrderType.LIMIT, price=Decimal("24000"))
    env.journal.add_intent(Intent("c-armed", "r-armed", "paper", "bid", "bid", 0, 0, Purpose.ENTRY, req, now))
    return holder


async def test_a_claim_lapsed_before_its_instant_is_left_to_the_takeover_which_discards_it(tmp_path):
    env = make_env(tmp_path)
    _armed_by_dead_holder(env, lease_after_instant=-dt.timedelta(milliseconds=300))
    # the survivor's other fire on the same account prepares: dead-run closing and reconcile
    await env.run(playbook(OTHER_FIRE, name="p2"))
    survivor = FireStore(env.engine, "daemon-b")
    (row,) = claim_leases.takeable(survivor)
    assert claim_leases.take_over(survivor, row, env.clock.now(), 1.0)
    clear_unsent_run(env.journal, row, env.clock.now())
    # the armed run is gone: re-armed afresh under the same run id and client id, so it is sent
    assert env.journal.get_run("r-armed") is None and env.journal.get_intent("c-armed") is None
    assert not [c for c in env.journal.calls() if c["client_order_id"] == "c-armed"]  # never looked up


async def test_a_claim_lapsed_after_its_instant_stays_on_the_lookup_path(tmp_path):
    env = make_env(tmp_path)
    _armed_by_dead_holder(env, lease_after_instant=dt.timedelta(milliseconds=300))
    await env.run(playbook(OTHER_FIRE, name="p2"))
    dead = env.journal.get_run("r-armed")
    assert dead.status is RunStatus.INTERRUPTED  # closed, its order looked up as today
    assert [c for c in env.journal.calls() if c["client_order_id"] == "c-armed"]
    assert claim_leases.takeable(FireStore(env.engine, "daemon-b")) == []
