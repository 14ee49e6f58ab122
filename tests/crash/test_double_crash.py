"""Issue 11 §3, the double-crash re-send: every send (first, re-send, multileg) stamps the intent's
``sent_at`` in the commit before the request leaves, and absence is measured from it, not from
``updated_at`` (which any write moves). Paper behaving like the real brokers: a repeated client id is
a second order, and lookups by client id lag a new order."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.engine import make_env, playbook
from helpers.faulty_broker import Faulty, FaultyMultileg

from runner.engine.gateway import Gateway, Missing
from runner.errors import OutcomeUnknown
from runner.journal.tables import Resolution, StepOutcome

BUY = "steps:\n  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}\n"
SPREAD = """\
steps:
  - kind: spread
    id: s
    legs:
      - {id: hedge, instrument: pe, side: BUY, lots: 1, role: hedge}
      - {id: short, instrument: ce, side: SELL, lots: 1}
"""


class Killed(BaseException):
    """The process dies here (nothing of ours catches a BaseException that is not an Exception)."""


def _timeouts_then_answers(broker: Faulty, n: int) -> Faulty:
    for _ in range(n):
        broker.fail("get_order", OutcomeUnknown("lookup timed out"))
    return broker


async def _two_deaths(env: Any, pb: Any) -> Faulty:
    """Start 1 dies after the intent commit; start 2, 61 s later, has lookups that first time out and
    then answer not-found, so it re-sends, and dies after the request left."""
    with pytest.raises(Killed):
        await env.run(pb, broker=Faulty(env.broker()).fail("place", Killed()))
    env.clock.advance(61)
    second = _timeouts_then_answers(Faulty(env.broker()), 2).fail("place", Killed(), after_send=True)
    with pytest.raises(Killed):
        await env.run(pb, broker=second)
    assert second.calls["place"] == 1  # the re-send left
    return second


async def test_a_third_start_soon_after_a_dead_resend_sends_nothing(tmp_path):
    env = make_env(tmp_path, idempotent_client_ids=False, lookup_lag=20)
    pb = playbook(BUY)
    await _two_deaths(env, pb)
    (intent,) = env.journal.intents()
    assert intent.sent_at is not None and intent.sent_at == env.clock.now()  # stamped before the re-send
    env.clock.advance(5)  # the broker's day book lags 20 s: lookups by client id miss the order
    third = Faulty(env.broker())
    report = await env.run(pb, broker=third)
    assert third.calls["place"] == 0
    assert report.steps[0].outcome is StepOutcome.FAILED and "outcome unknown" in report.steps[0].message
    assert len(await env.broker().orders()) == 1
    # Once the book catches up, a later start finds it; still one order.
    env.clock.advance(30)
    fourth = Faulty(env.broker())
    await env.run(pb, broker=fourth)
    assert fourth.calls["place"] == 0 and len(await env.broker().orders()) == 1


async def test_settle_does_not_rule_a_just_resent_intent_absent(tmp_path):
    env = make_env(tmp_path, idempotent_client_ids=False, lookup_lag=20)
    pb = playbook(BUY)
    await _two_deaths(env, pb)
    (intent,) = env.journal.intents()
    env.clock.advance(5)
    gw = Gateway(Faulty(env.broker()), env.journal, env.clock, "other", env.account)
    assert await gw.settle(intent) is Missing.UNKNOWN
    assert env.journal.get_intent(intent.client_order_id).resolution is not Resolution.ABSENT  # type: ignore[union-attr]


async def test_absence_is_measured_from_the_send_not_from_the_last_write(tmp_path):
    # A write that is not a send (a lookup's report, a status mark) must not push absence further out,
    # and a send must: sent_at moves only with sends.
    env = make_env(tmp_path, idempotent_client_ids=False)
    pb = playbook(BUY)
    with pytest.raises(Killed):
        await env.run(pb, broker=Faulty(env.broker()).fail("place", Killed()))
    (intent,) = env.journal.intents()
    assert intent.sent_at == intent.created_at
    env.clock.advance(61)
    env.journal.mark_unknown(intent.client_order_id, env.clock.now())  # moves updated_at, not sent_at
    moved = env.journal.get_intent(intent.client_order_id)
    assert moved is not None and moved.sent_at == intent.sent_at and moved.updated_at == env.clock.now()
    gw = Gateway(Faulty(env.broker()), env.journal, env.clock, "other", env.account)
    assert gw._absence_proven(moved)


async def test_a_native_spread_resent_after_two_deaths_is_not_sent_a_third_time(tmp_path):
    env = make_env(tmp_path, idempotent_client_ids=False, lookup_lag=20)
    pb = playbook(SPREAD)
    with pytest.raises(Killed):
        await env.run(pb, broker=FaultyMultileg(env.broker()).fail("place_multileg", Killed()))
    env.clock.advance(61)
    second = _timeouts_then_answers(FaultyMultileg(env.broker()), 4)
    second.fail("place_multileg", Killed(), after_send=True)
    with pytest.raises(Killed):
        await env.run(pb, broker=second)
    assert second.calls["place_multileg"] == 1
    assert all(i.sent_at == env.clock.now() for i in env.journal.intents())
    env.clock.advance(5)
    third = FaultyMultileg(env.broker())
    report = await env.run(pb, broker=third)
    assert third.calls["place_multileg"] == 0
    assert report.steps[0].outcome is StepOutcome.FAILED
    assert len(await env.broker().orders()) == 2  # two legs, once
