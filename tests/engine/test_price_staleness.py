"""Price references carry their time: the broker's quote (``MarketData.quotes``, one call for all the
instruments a step prices), else its ``ltp``, else the last price this process saw, none older than
``Tuning.max_quote_age``. A square-off with no fresh price follows ``escalation.no_price``: market (said)
or fail (nothing sent for that position). All on the paper broker under a VirtualClock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

from helpers.engine import RELIANCE, at, ce_instrument, make_env, pe_instrument, playbook
from helpers.faulty_broker import Faulty

from runner.brokers.base import ForwardingBroker, Quote
from runner.engine.calls import BrokerCalls, Tuning
from runner.journal.tables import events
from runner.model import Instrument, OrderRequest, OrderType, Side
from runner.plan.model import CallOp, PlaybookSource, Verdict
from runner.plan.planner import make_plan

ENTRY = '  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-1.3%"}}\n'


class AgedQuotes(ForwardingBroker):
    """The paper broker's quotes, stamped ``age`` seconds before now (a stuck feed's last tick)."""

    def __init__(self, inner, age: float) -> None:
        super().__init__(inner)
        self.age = age
        self.asked: list[list[str]] = []

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        self.asked.append([i.key for i in instruments])
        got = await super().quotes(instruments)
        return {k: dataclasses.replace(q, at=q.at - dt.timedelta(seconds=self.age)) for k, q in got.items()}


async def test_paper_quotes_come_from_its_price_path_stamped_now(tmp_path):
    env = make_env(tmp_path)
    got = await env.broker().quotes([ce_instrument(), RELIANCE])
    assert {k: q.ltp for k, q in got.items()} == {
        ce_instrument().key: Decimal(120),
        RELIANCE.key: Decimal(2900),
    }
    assert all(q.at == env.clock.now() and q.at.utcoffset() == dt.timedelta(0) for q in got.values())


async def test_a_stale_quote_is_refused_and_nothing_is_sent(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook("steps:\n" + ENTRY), broker=AgedQuotes(env.broker(), 45))
    assert env.steps(report) == {"buy": "failed"}
    message = report.steps[0].message
    assert "no last traded price available" in message and "nothing was sent" in message
    assert "45s old" in message and "30s limit (max_quote_age)" in message
    assert env.journal.intents(run_id=report.run_id) == []
    assert await env.broker().orders() == []


async def test_a_fresh_quote_is_used(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook("steps:\n" + ENTRY), broker=AgedQuotes(env.broker(), 29))
    assert env.steps(report) == {"buy": "succeeded"}
    (order,) = await env.broker().orders()
    assert order.price == Decimal("118.40")  # 120 - 1.3%, snapped down
    assert [c["method"] for c in env.journal.calls(run_id=report.run_id)].count("quotes") == 1


async def test_the_limit_is_a_tuning_field(tmp_path):
    env = make_env(tmp_path)
    tuning = Tuning(max_quote_age=60.0)
    report = await env.run(playbook("steps:\n" + ENTRY), broker=AgedQuotes(env.broker(), 45), tuning=tuning)
    assert env.steps(report) == {"buy": "succeeded"}


async def test_the_fallback_to_the_last_price_seen_honours_its_age(tmp_path):
    env = make_env(tmp_path)
    calls = BrokerCalls(Faulty(env.broker()), env.journal, env.clock, "r", "paper")  # no market data at all
    ins = ce_instrument()
    assert (await calls.reference(ins)).price is None
    calls._saw(ins.key, Decimal("121.5"), env.clock.now())  # e.g. a fill's average price
    env.clock.advance(30)
    ref = await calls.reference(ins)
    assert (ref.price, ref.source) == (Decimal("121.5"), "last price seen")
    env.clock.advance(1)
    ref = await calls.reference(ins)
    assert ref.price is None and ref.refused is not None
    assert "last price seen 121.5 is 31s old" in ref.why_none()


async def test_a_fresher_last_price_seen_beats_a_stale_quote(tmp_path):
    env = make_env(tmp_path)
    calls = BrokerCalls(AgedQuotes(env.broker(), 300), env.journal, env.clock, "r", "paper")
    ins = ce_instrument()
    calls._saw(ins.key, Decimal("119"), env.clock.now() - dt.timedelta(seconds=5))
    ref = await calls.reference(ins)
    assert (ref.price, ref.source) == (Decimal("119"), "last price seen")
    # an older price never replaces a newer one
    calls._saw(ins.key, Decimal("50"), env.clock.now() - dt.timedelta(seconds=600))
    assert (await calls.reference(ins)).price == Decimal("119")


async def test_a_spread_quotes_all_its_legs_in_one_call(tmp_path):
    env = make_env(tmp_path)
    broker = AgedQuotes(env.broker(), 0)
    body = """
steps:
  - kind: spread
    id: sp
    leg_timeout: 5s
    legs:
      - {id: short_ce, instrument: ce, side: SELL, lots: 1, type: LIMIT, price: {ltp: "-1%"}}
      - {id: long_pe, instrument: pe, side: BUY, lots: 1, role: hedge, type: LIMIT, price: {ltp: "+1%"}}
"""
    report = await env.run(playbook(body), broker=broker)
    assert env.steps(report) == {"sp": "succeeded"}, report.steps[0].message
    assert broker.asked == [[ce_instrument().key, pe_instrument().key]]


async def _seed(env, *requests: OrderRequest) -> None:
    book = env.broker()
    for r in requests:
        await book.place(r)
    env.clock.advance(1)


SQUARE = """
steps:
  - {{kind: square_off, id: sq, escalation: {{limit_offset: 1, timeout: 15s{extra}}}}}
"""


async def test_square_off_quotes_every_position_once(tmp_path):
    env = make_env(tmp_path)
    await _seed(
        env, OrderRequest("s1", RELIANCE, Side.BUY, 10), OrderRequest("s2", ce_instrument(), Side.SELL, 75)
    )
    broker = AgedQuotes(env.broker(), 0)
    report = await env.run(playbook(SQUARE.format(extra="")), broker=broker)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    assert len(broker.asked) == 1 and sorted(broker.asked[0]) == sorted([RELIANCE.key, ce_instrument().key])
    exits = [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")]
    assert {o.order_type for o in exits} == {OrderType.LIMIT}


async def test_no_price_market_closes_at_market_and_says_so(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    report = await env.run(playbook(SQUARE.format(extra="")), broker=AgedQuotes(env.broker(), 120))
    assert env.steps(report) == {"sq": "succeeded"}
    message = report.steps[0].message
    assert "no price reference for a limit exit" in message and "120s old" in message
    assert "closing at market (escalation.no_price: market)" in message
    (exit_order,) = [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")]
    assert exit_order.order_type is OrderType.MARKET
    warnings = [e for e in env.journal.rows(events, report.run_id) if e["level"] == "warning"]
    assert any("escalation.no_price: market" in e["message"] for e in warnings)


async def test_no_price_fail_sends_nothing_for_that_position(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    report = await env.run(playbook(SQUARE.format(extra=", no_price: fail")), broker=Faulty(env.broker()))
    assert env.steps(report) == {"sq": "failed"}
    message = report.steps[0].message
    assert "NOT FLAT" in message and RELIANCE.key in message and "escalation.no_price: fail" in message
    assert [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")] == []
    assert {p.instrument.key: p.quantity for p in await env.broker().positions()} == {RELIANCE.key: 10}


async def _plan(env, pb, broker):
    return await make_plan(
        pb,
        PlaybookSource("pb.yaml", pb.model_dump_json()),
        broker,
        env.journal,
        account=env.account,
        now=env.clock.now(),
        scheduled_for=at(0, 0),
    )


async def test_plan_shows_the_no_price_policy_both_ways(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    (step,) = (await _plan(env, playbook(SQUARE.format(extra="")), env.broker())).steps
    assert step.verdict is Verdict.PLANNED
    assert "with no fresh price reference: market" in step.message
    (step,) = (await _plan(env, playbook(SQUARE.format(extra="")), Faulty(env.broker()))).steps
    assert step.verdict is Verdict.PLANNED and "closing at market (no_price: market)" in step.message
    assert [c.order_type for c in step.calls if c.op is CallOp.PLACE] == [OrderType.MARKET]
    (step,) = (
        await _plan(env, playbook(SQUARE.format(extra=", no_price: fail")), Faulty(env.broker()))
    ).steps
    assert step.verdict is Verdict.FAILS
    assert (
        "with no fresh price reference: fail" in step.message
        and "not closed (no_price: fail)" in step.message
    )
    assert [c for c in step.calls if c.op is CallOp.PLACE] == []


async def test_a_notional_limit_refuses_a_market_order_priced_only_by_a_stale_quote(tmp_path):
    env = make_env(tmp_path)
    body = (
        "limits: {max_notional: 1000000}\n"
        "steps:\n  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1}\n"
    )
    stale = await env.run(playbook(body), broker=AgedQuotes(env.broker(), 45))
    assert env.steps(stale) == {"buy": "refused"}, stale.steps[0].message
    assert "no price reference" in stale.steps[0].message
    fresh = await env.run(playbook(body, name="t2"), broker=AgedQuotes(env.broker(), 5))
    assert env.steps(fresh) == {"buy": "succeeded"}, fresh.steps[0].message
