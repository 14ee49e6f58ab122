"""place steps against the paper broker: outcomes, journal rows, retries, lookups, risk refusals."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from helpers.engine import make_env, playbook
from helpers.faulty_broker import Faulty

from runner import logs
from runner.errors import AuthExpired, OutcomeUnknown, RateLimited
from runner.journal.store import Journal
from runner.journal.tables import StepOutcome, order_intents
from runner.model import Order, OrderRequest, OrderStatus

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


async def test_broker_calls_are_journaled_as_json(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(MARKET))
    calls = env.journal.calls(run_id=report.run_id)
    place = next(c for c in calls if c["method"] == "place")
    body = json.loads(place["request"])
    assert body["side"] == "BUY" and body["quantity"] == 150
    with env.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(order_intents)).scalar_one() == 1


# A session token as brokers issue them (a JWT), and the header text some brokers echo in errors.
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0cmFkZXIifQ.c2lnbmF0dXJlLXZhbHVl"
LEAKY_ERROR = f"429 too many requests for Authorization: Bearer {TOKEN}"


class EchoingToken(Faulty):
    """A broker whose order reports carry the session token in their raw status text."""

    def _leak(self, order: Order | None) -> Any:
        return None if order is None else order.evolve(raw_status=f"{order.raw_status} (session {TOKEN})")

    async def place(self, request: OrderRequest) -> Order:
        return self._leak(await super().place(request))  # type: ignore[no-any-return]

    async def get_order(self, client_order_id: str) -> Order | None:
        return self._leak(await super().get_order(client_order_id))  # type: ignore[no-any-return]


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The JSON log stream of the engine, configured as in production but into a buffer."""
    was, saved = structlog.is_configured(), structlog.get_config()
    monkeypatch.setattr(logs, "_configured", logs._configured)
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, force=True)
    yield stream
    if was:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


async def test_secrets_in_broker_answers_are_redacted_in_journal_and_logs(tmp_path, log_lines):
    env = make_env(tmp_path)
    broker = EchoingToken(env.broker()).fail("place", RateLimited(LEAKY_ERROR, retry_after=1.0))
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok and broker.calls["place"] == 2
    rows = env.journal.calls(run_id=report.run_id)
    texts = [r[k] or "" for r in rows for k in ("request", "response")]
    answers = [t for t in texts if "session" in t]
    assert answers and all("session ***" in t for t in answers)  # the token was there, and was masked
    assert not any(TOKEN in t for t in texts)
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    (retry,) = [e for e in lines if e["event"] == "broker_retry"]
    assert retry["error"] == "429 too many requests for Authorization: Bearer ***"
    assert TOKEN not in log_lines.getvalue()


def test_secret_named_log_fields_and_secret_values_are_masked(log_lines):
    from runner.accounts import Secret

    logs.get_logger(run="r1").info("login", password="hunter2", api_key="k-123", user_id="AB1234")
    secret = Secret("s3cr3t-value")
    logs.get_logger().info("relogin", credential=secret, value=secret, note=f"using {secret}")
    text = log_lines.getvalue()
    login, relogin = (json.loads(line) for line in text.splitlines())
    assert (login["password"], login["api_key"], login["user_id"]) == ("***", "***", "AB1234")
    assert relogin["credential"] == relogin["value"] == "***"
    assert "hunter2" not in text and "k-123" not in text and "s3cr3t-value" not in text


async def test_secrets_in_broker_errors_are_redacted_in_journal(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", RateLimited(LEAKY_ERROR, retry_after=1.0))
    report = await env.run(playbook(MARKET), broker=broker)
    (failed,) = [c for c in env.journal.calls(run_id=report.run_id) if c["error"] == "RateLimited"]
    assert failed["error_message"] == "429 too many requests for Authorization: Bearer ***"
