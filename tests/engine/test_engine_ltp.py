"""LTP-relative prices in the engine: resolved from the broker's last traded price when the step runs,
snapped to the tick, journaled and sent as absolute prices; a resumed run reuses them, never re-resolves;
no price available fails the step before anything is sent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from helpers.engine import at, ce_instrument, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.engine.steps.modify import RESOLVED_EVENT
from runner.journal.tables import events

ENTRY = '  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-1.3%"}}\n'


class Crash(BaseException):
    """The process dies (after the intent is journaled, before the request leaves)."""


async def test_place_resolves_snaps_and_journals_the_absolute_price(tmp_path):
    env = make_env(tmp_path)  # the CE trades at 120
    report = await env.run(playbook("steps:\n" + ENTRY))
    assert env.steps(report) == {"buy": "succeeded"}
    (intent,) = env.journal.intents(run_id=report.run_id)
    # 120 - 1.3% = 118.44, BUY rounds down to the 0.05 tick
    assert intent.request.price == Decimal("118.40")
    (order,) = await env.broker().orders()
    assert order.price == Decimal("118.40")


async def test_no_last_traded_price_fails_the_step_before_anything_is_sent(tmp_path):
    env = make_env(tmp_path)
    no_quotes = Faulty(env.broker())  # exposes no ltp(): nothing to resolve against
    report = await env.run(playbook("steps:\n" + ENTRY), broker=no_quotes)
    assert env.steps(report) == {"buy": "failed"}
    assert "no last traded price" in report.steps[0].message
    assert "nothing was sent" in report.steps[0].message
    assert env.journal.intents(run_id=report.run_id) == []
    assert await env.broker().orders() == []


async def test_a_resumed_run_reuses_the_journaled_price(tmp_path):
    env = make_env(tmp_path)
    dying = Faulty(env.broker()).fail("place", Crash())
    dying.ltp = env.broker().ltp  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        await env.run(playbook("steps:\n" + ENTRY), broker=dying)
    assert await env.broker().orders() == []  # journaled, never sent
    env.prices.set(ce_instrument(), Decimal("125"), at(9, 16))  # the market moves before the restart
    await env.clock.sleep_until(at(9, 17))
    report = await env.run(playbook("steps:\n" + ENTRY))
    assert env.steps(report) == {"buy": "succeeded"}
    (order,) = await env.broker().orders()
    assert order.price == Decimal("118.40")  # resolved once, from the LTP of the first start
    assert len(env.journal.intents(run_id=report.run_id)) == 1


async def test_relative_modify_and_chase_limit_are_resolved_and_journaled(tmp_path):
    env = make_env(tmp_path)
    body = (
        "steps:\n"
        + "  - {kind: place, id: sell, instrument: ce, side: SELL, lots: 1, type: LIMIT,\n"
        + '     price: {ltp: "+5%"}}\n'
        + '  - {kind: modify, id: m, order: sell, price: {ltp: "+3 ticks"}}\n'
    )
    report = await env.run(playbook(body))
    assert env.steps(report) == {"sell": "succeeded", "m": "succeeded"}
    (order,) = await env.broker().open_orders()
    assert order.price == Decimal("120.15")  # 120 + 3 x 0.05
    (event,) = [e for e in env.journal.rows(events, report.run_id) if e["kind"] == RESOLVED_EVENT]
    assert event["step_id"] == "m" and event["message"] == "resolved price = LTP +3 ticks of 120.00 -> 120.15"
