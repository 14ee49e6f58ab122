"""place steps against the paper broker: outcomes, journal rows, retries, lookups, risk refusals."""

from __future__ import annotations

import json

import sqlalchemy as sa
from engine_helpers import make_env, playbook
from faulty_broker import Faulty

from runner.errors import AuthExpired, OutcomeUnknown, RateLimited
from runner.journal import Journal, StepOutcome, order_intents
from runner.model import OrderRequest, OrderStatus

MARKET = """
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 2}
"""


async def test_market_place_fills_and_is_journaled(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(MARKET))
    assert env.steps(report) == {"buy": "succeeded"}
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.request.quantity == 150
    assert intent.status is OrderStatus.FILLED and intent.filled_quantity == 150
    fills = env.journal.rows(sa.Table("fills", sa.MetaData(), autoload_with=env.engine), report.run_id)
    assert sum(f["quantity"] for f in fills) == 150
    methods = [c["method"] for c in env.journal.calls(run_id=report.run_id)]
    assert methods.count("place") == 1
    orders = await env.broker().orders()
    assert [o.client_order_id for o in orders] == [intent.client_order_id]


async def test_limit_away_from_market_stays_open_and_says_so(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("""
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
""")
    report = await env.run(pb)
    assert report.steps[0].outcome is StepOutcome.SUCCEEDED
    assert "open" in report.steps[0].message
    (o,) = await env.broker().open_orders()
    assert o.price == 24000


async def test_rejection_is_a_failed_step_and_never_retried(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())
    pb = playbook("""
steps:
  - {kind: place, id: big, instrument: fut, side: BUY, lots: 30}
  - {kind: place, id: after, instrument: fut, side: BUY, lots: 1}
""")
    report = await env.run(pb, broker=broker)
    assert env.steps(report) == {"big": "failed", "after": "skipped"}
    assert "freeze" in report.steps[0].message
    assert broker.calls["place"] == 1
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.status is OrderStatus.REJECTED


async def test_risk_limit_refuses_before_anything_is_sent(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())
    pb = playbook("""
limits: {max_quantity_per_order: 100}
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 2}
""")
    report = await env.run(pb, broker=broker)
    assert report.steps[0].outcome is StepOutcome.REFUSED
    assert "max_quantity_per_order 100" in report.steps[0].message
    assert broker.calls["place"] == 0
    assert env.journal.intents(run_id=report.run_id) == []
    assert report.status.value == "refused"


async def test_market_notional_uses_the_broker_price_reference(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("""
limits: {max_notional: 1000000}
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}
""")
    report = await env.run(pb)
    assert report.steps[0].outcome is StepOutcome.REFUSED  # 75 x 24500 = 1,837,500 > 1,000,000
    assert "notional 1837500" in report.steps[0].message


async def test_intent_row_is_committed_before_place_is_called(tmp_path):
    env = make_env(tmp_path)
    seen: list[str] = []
    other = Journal(env.db_url)  # a separate connection sees only committed rows

    def check(request: OrderRequest) -> None:
        intent = other.get_intent(request.client_order_id)
        assert intent is not None, "place() called before the intent was committed"
        seen.append(intent.status.value)

    broker = Faulty(env.broker()).hook("place", check)
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok and seen == ["pending_new"]


async def test_rate_limited_is_retried_after_retry_after(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", RateLimited("slow down", retry_after=2.0))
    t0 = env.clock.now()
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok
    assert broker.calls["place"] == 2
    assert (env.clock.now() - t0).total_seconds() >= 2.0
    assert len(await env.broker().orders()) == 1
    errors = [c["error"] for c in env.journal.calls(run_id=report.run_id) if c["method"] == "place"]
    assert errors == ["RateLimited", None]


async def test_auth_expired_logs_in_once_then_retries(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", AuthExpired("session expired"))
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok
    assert broker.calls["connect"] == 2  # the start, then once after AuthExpired
    assert broker.calls["place"] == 2


async def test_outcome_unknown_after_send_is_resolved_by_lookup_not_resent(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", OutcomeUnknown("reply lost"), after_send=True)
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok
    assert broker.calls["place"] == 1
    assert len(await env.broker().orders()) == 1
    (intent,) = env.journal.intents(run_id=report.run_id)
    statuses = [(t["old_status"], t["new_status"]) for t in env.journal.transitions(intent.client_order_id)]
    assert statuses[0] == ("pending_new", "unknown")


async def test_outcome_unknown_that_never_arrived_is_sent_again_under_the_same_id(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", OutcomeUnknown("connection reset"))
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok
    assert broker.calls["place"] == 2
    assert broker.calls["get_order"] >= 1
    orders = await env.broker().orders()
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert [o.client_order_id for o in orders] == [intent.client_order_id]


async def test_broker_calls_are_journaled_with_secrets_redacted(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(MARKET))
    calls = env.journal.calls(run_id=report.run_id)
    place = next(c for c in calls if c["method"] == "place")
    body = json.loads(place["request"])
    assert body["side"] == "BUY" and body["quantity"] == 150
    with env.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(order_intents)).scalar_one() == 1
