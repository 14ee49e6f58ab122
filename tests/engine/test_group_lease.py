"""A ``parallel`` group with an exclusive member (a square-off) and a place member: the run takes one
exclusive lease for the group when the group starts (not while it waits for the group's ``at``), holds
it until the last member ends (no other run trades the account meanwhile), and never waits for itself."""

from __future__ import annotations

import datetime as dt
from typing import Any

from helpers.engine import RELIANCE, at, make_env, playbook

from runner.engine.core import Engine, RunOptions
from runner.engine.leases import Lease, LeaseMode, leases_for
from runner.journal.tables import RunStatus
from runner.model import OrderRequest, Product, Side

GROUP = """
steps:
  - kind: parallel
    id: close_and_rest
    at: "10:00"
    steps:
      - {kind: place, id: p, instrument: rel, side: BUY, quantity: 5, type: LIMIT, price: 2800, product: MIS}
      - {kind: square_off, id: sq, cancel_open_orders: false}
      - {kind: wait, id: w, until: "10:05"}
"""


async def test_an_exclusive_member_holds_the_account_for_the_whole_group_without_waiting_for_itself(
    tmp_path: Any,
) -> None:
    env = make_env(tmp_path, start=at(9, 59, 58))  # the group due within LEASE_AHEAD: taken while preparing
    book = env.broker()
    await book.place(OrderRequest("seed", RELIANCE, Side.BUY, 10, product=Product.MIS))
    env.clock.advance(1)
    options = RunOptions(at(0, 0))
    engine = Engine(playbook(GROUP), env.broker(), env.journal, env.clock, account="paper", options=options)
    await engine.prepare()
    leases = leases_for(env.engine)
    (ahead,) = leases.holders(env.account)
    assert ahead.mode is LeaseMode.EXCLUSIVE  # the group's strongest mode, not its first member's
    seen: list[tuple[list[Any], object]] = []
    sleep_until = env.clock.sleep_until

    async def spy(until: dt.datetime) -> None:  # while a member waits: who holds the account, can others?
        other = leases.try_acquire(env.account, "other-run", LeaseMode.SHARED, "e")
        if isinstance(other, Lease):
            leases.release(other)
        seen.append((leases.holders(env.account), other))
        await sleep_until(until)

    env.clock.sleep_until = spy  # type: ignore[method-assign]
    report = await engine.execute()
    assert report.status is RunStatus.SUCCEEDED, [(s.step_id, s.message) for s in report.steps]
    assert env.steps(report) == {"sq": "succeeded", "p": "succeeded", "w": "succeeded"}
    assert seen, "the wait member never slept"
    for holders, other in seen:
        assert [(h.run_id, h.mode) for h in holders] == [(engine.run_id, LeaseMode.EXCLUSIVE)]
        assert not isinstance(other, Lease), "another run got the account during the group"
    assert leases.holders(env.account) == []


async def test_a_group_due_later_holds_no_lease_while_it_waits(tmp_path: Any) -> None:
    env = make_env(tmp_path, start=at(9, 15))
    options = RunOptions(at(0, 0))
    engine = Engine(playbook(GROUP), env.broker(), env.journal, env.clock, account="paper", options=options)
    await engine.prepare()
    # Its first member has no ``at`` of its own, but the group is due at 10:00: nothing is held until then.
    assert leases_for(env.engine).holders(env.account) == []
