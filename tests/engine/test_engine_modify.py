"""modify steps: conditions, absolute changes verified by read-back, chase with limit and then_market."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from helpers.engine import NIFTY_FUT, at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.errors import OutcomeUnknown
from runner.model import OrderStatus, OrderType

BID = "  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}\n"


async def test_absolute_modify_is_verified_by_reading_back(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - {kind: modify, id: m, order: bid, price: 24100, when: {status: [open], unfilled: true}}
"""
        )
    )
    assert env.steps(report) == {"bid": "succeeded", "m": "succeeded"}
    (o,) = await env.broker().open_orders()
    assert o.price == Decimal(24100)


async def test_condition_not_met_skips(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}
  - {kind: modify, id: m, order: buy, price: 24100}
""")
    )
    assert env.steps(report) == {"buy": "succeeded", "m": "skipped"}
    assert "filled" in report.steps[1].message


async def test_older_than_waits_for_the_order_age(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - {kind: modify, id: m, order: bid, to_market: true, when: {status: [open], older_than: 30s}}
"""
        )
    )
    assert env.steps(report) == {"bid": "succeeded", "m": "succeeded"}
    assert env.clock.now() >= at(9, 15, 30)
    (o,) = await env.broker().orders()
    assert o.order_type is OrderType.MARKET and o.status is OrderStatus.FILLED


async def test_chase_steps_the_price_and_fills_when_it_meets_the_market(tmp_path):
    env = make_env(tmp_path)
    env.prices.set(NIFTY_FUT, Decimal("24010"), at(9, 15))
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - {kind: modify, id: c, order: bid, chase: {tick: 5, every: 2s, max: 5}}
"""
        )
    )
    assert env.steps(report) == {"bid": "succeeded", "c": "succeeded"}
    (o,) = await env.broker().orders()
    assert o.status is OrderStatus.FILLED and o.price == Decimal(24010)  # 24000 + 2 ticks of 5


async def test_chase_respects_limit_price_then_goes_market(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - kind: modify
    id: c
    order: bid
    chase: {tick: 10, every: 1s, max: 5, limit_price: 24020, then_market: true}
"""
        )
    )
    assert env.steps(report) == {"bid": "succeeded", "c": "succeeded"}
    calls = [c for c in env.journal.calls(run_id=report.run_id) if c["method"] == "modify" and not c["error"]]
    assert len(calls) == 3  # 24010, 24020 (capped), then MARKET
    (o,) = await env.broker().orders()
    assert o.status is OrderStatus.FILLED and o.order_type is OrderType.MARKET


async def test_modify_outcome_unknown_is_resolved_by_reading_back(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("modify", OutcomeUnknown("timeout"), after_send=True)
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - {kind: modify, id: m, order: bid, price: 24050}
"""
        ),
        broker=broker,
    )
    assert env.steps(report) == {"bid": "succeeded", "m": "succeeded"}
    assert broker.calls["modify"] == 1


async def test_last_chase_step_gets_its_interval_before_going_to_market(tmp_path):
    """Issue 15: the last chase price stood 0.5 ms before the order went to market."""
    env = make_env(tmp_path)
    env.prices.set(NIFTY_FUT, Decimal("24100"), at(9, 15))  # never reached by the chase: it goes to market
    report = await env.run(
        playbook(
            "steps:\n"
            + BID
            + """
  - {kind: modify, id: c, order: bid, chase: {tick: 5, every: 2s, max: 2, then_market: true}}
"""
        )
    )
    assert env.steps(report) == {"bid": "succeeded", "c": "succeeded"}
    calls = [c for c in env.journal.calls(run_id=report.run_id) if c["method"] == "modify" and not c["error"]]
    assert len(calls) == 3  # 24005, 24010, then MARKET
    gaps = [(b["at"] - a["at"]).total_seconds() for a, b in pairwise(calls)]
    assert gaps[0] >= 2 and gaps[1] >= 2, gaps
