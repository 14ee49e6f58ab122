"""Account leases: two runs on one account never trade the same position twice."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_helpers import RELIANCE, at, make_env, playbook

from runner.journal import Intent, Purpose, RunStatus
from runner.model import OrderRequest, Product, Side

SQUARE_OFF = """
steps:
  - {kind: square_off, id: sq, filter: {}}
"""


class Interleaved:
    """The paper broker, yielding to the event loop before every order leaves: two runs started
    together both read the position before either closes it (the user's race, made deterministic)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def place(self, request: OrderRequest) -> Any:
        for _ in range(20):
            await asyncio.sleep(0)
        return await self._inner.place(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _long_reliance(env: Any, qty: int = 10) -> None:
    book = env.broker()
    await book.place(OrderRequest("seed", RELIANCE, Side.BUY, qty, product=Product.MIS))
    env.clock.advance(1)
    await book.positions()


async def test_two_square_offs_on_one_account_close_the_position_once(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    daemon = playbook(SQUARE_OFF, name="rule-1515")
    operator = playbook(SQUARE_OFF, name="operator")
    reports = await asyncio.gather(
        env.run(daemon, broker=Interleaved(env.broker()), slot=at(15, 15)),
        env.run(operator, broker=Interleaved(env.broker()), slot=at(15, 15, 1)),
    )
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 0, [r.steps for r in reports]
    exits = [o for o in await env.broker().orders() if o.client_order_id != "seed"]
    assert sum(o.quantity for o in exits) == 10
    # The second waited for the first's exclusive lease, then found nothing left to close.
    messages = sorted(r.steps[0].message for r in reports)
    assert messages[0].startswith("flat: 1 position(s) closed"), messages
    assert messages[1] == "nothing to square off", messages


# --- a square-off waits for other live runs' orders in flight -----------------------------------------

ENTRY_CID = "other-entry-0"


def _in_flight_entry(env: Any, qty: int = 5) -> OrderRequest:
    """Another live run (RUNNING) has journaled an entry whose request has not left yet."""
    run = "20260302-091500-otherrun"
    env.journal.start_run(
        run, playbook="entry", account=env.account, scheduled_for=at(9, 15), mode="run", now=env.clock.now()
    )
    request = OrderRequest(ENTRY_CID, RELIANCE, Side.BUY, qty, product=Product.MIS)
    env.journal.add_intent(
        Intent(ENTRY_CID, run, env.account, "e", "e", 0, 0, Purpose.ENTRY, request, env.clock.now())
    )
    return request


async def test_square_off_waits_for_another_live_runs_order_in_flight(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    request = _in_flight_entry(env)

    async def owner() -> None:  # the entry's own run: its request lands a moment later, and it journals it
        for _ in range(10):
            await asyncio.sleep(0)
        order = await env.broker().place(request)
        env.journal.record_order(order, env.clock.now())

    report, _ = await asyncio.gather(env.run(playbook(SQUARE_OFF, name="sq")), owner())
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 0  # the late entry's 5 were closed too, not left open


async def test_square_off_refuses_while_another_runs_order_stays_in_flight(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    _in_flight_entry(env)
    report = await env.run(playbook(SQUARE_OFF, name="sq"), busy_wait=2.0)
    assert report.status is RunStatus.REFUSED
    message = report.steps[0].message
    assert "20260302-091500-otherrun" in message and ENTRY_CID in message and "nothing sent" in message
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 10
    assert [o.client_order_id for o in await env.broker().orders()] == ["seed"]


async def test_a_finished_runs_order_is_reconciled_not_waited_for(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    _in_flight_entry(env)
    env.journal.finish_run("20260302-091500-otherrun", RunStatus.FAILED, env.clock.now(), "crashed")
    env.clock.advance(120)  # past absent_after: the lookup proves it never arrived
    report = await env.run(playbook(SQUARE_OFF, name="sq"), busy_wait=0.0)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
