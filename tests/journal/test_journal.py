"""Journal: illegal transitions recorded (not overwritten), resume of the same run id, reconciliation
of unknown intents before anything new is sent, redaction of secrets in logs and broker-call rows."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import structlog
from helpers.engine import NIFTY_FUT, at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.accounts import Secret
from runner.journal.records import Intent
from runner.journal.tables import Purpose, Resolution, RunStatus, StepOutcome
from runner.logs import configure, get_logger, redact
from runner.model import IllegalTransition, Order, OrderRequest, OrderStatus, OrderType, Product, Side

ENTRY_EXIT = """
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
  - {kind: wait, id: lunch, until: "13:00"}
  - {kind: square_off, id: sq, at: "15:15"}
"""


def _intent(env, cid: str = "rnx") -> Intent:
    env.journal.start_run(
        "r1", playbook="p", account="paper", scheduled_for=at(0, 0), mode="run", now=at(9, 0)
    )
    req = OrderRequest(cid, NIFTY_FUT, Side.BUY, 75)
    intent = Intent(cid, "r1", "paper", "s", "s", 0, 0, Purpose.ENTRY, req, at(9, 0))
    env.journal.add_intent(intent)
    return intent


def _order(cid: str, status: OrderStatus, filled: int = 0) -> Order:
    return Order(
        cid, "B1", NIFTY_FUT, Side.BUY, 75, OrderType.MARKET, Product.MIS, status, filled_quantity=filled
    )


def test_illegal_transition_is_recorded_and_not_applied(tmp_path):
    env = make_env(tmp_path)
    _intent(env)
    env.journal.record_order(_order("rnx", OrderStatus.FILLED, 75), at(9, 1))
    try:
        env.journal.record_order(_order("rnx", OrderStatus.OPEN), at(9, 2))
    except IllegalTransition as exc:
        assert "filled -> open" in str(exc)
    else:
        raise AssertionError("filled -> open must be refused")
    assert env.journal.get_intent("rnx").status is OrderStatus.FILLED
    rows = env.journal.transitions("rnx")
    assert [(r["old_status"], r["new_status"], r["legal"]) for r in rows] == [
        ("pending_new", "filled", True),
        ("filled", "open", False),
    ]
    import sqlalchemy as sa

    from runner.journal.tables import events

    with env.engine.connect() as c:
        kinds = [r.kind for r in c.execute(sa.select(events))]
    assert kinds == ["illegal_transition"]


def test_duplicate_intent_is_refused(tmp_path):
    from runner.journal.errors import DuplicateIntent

    env = make_env(tmp_path)
    intent = _intent(env)
    try:
        env.journal.add_intent(intent)
    except DuplicateIntent:
        pass
    else:
        raise AssertionError("a second intent with the same client id must be refused")
    other = dataclasses.replace(
        intent, client_order_id="rny", request=dataclasses.replace(intent.request, client_order_id="rny")
    )
    try:  # same run/slot/leg/attempt under another id
        env.journal.add_intent(other)
    except DuplicateIntent:
        pass
    else:
        raise AssertionError("a second intent for the same slot must be refused")


def test_discard_armed_removes_only_an_untouched_armed_run(tmp_path):
    import pytest

    from runner.journal.errors import JournalError

    env = make_env(tmp_path)
    _intent(env)
    env.journal.start_step("r1", "s", position=0, kind="place", now=at(9, 0))
    env.journal.discard_armed("r1", "rnx")  # never sent: run, step and intent go
    assert env.journal.get_run("r1") is None and env.journal.get_intent("rnx") is None
    assert env.journal.steps_of("r1") == {}

    _intent(env)  # acknowledged once: it may be at the broker, so it stays
    env.journal.record_order(_order("rnx", OrderStatus.OPEN), at(9, 1))
    with pytest.raises(JournalError):
        env.journal.discard_armed("r1", "rnx")
    assert env.journal.get_intent("rnx") is not None and env.journal.get_run("r1") is not None


def test_discard_armed_refuses_once_a_broker_call_was_journaled(tmp_path):
    import pytest

    from runner.journal.errors import JournalError
    from runner.journal.fastpath import CALL_COLUMNS

    env = make_env(tmp_path)
    _intent(env)
    env.journal.record_call(
        dict.fromkeys(CALL_COLUMNS)
        | {"run_id": "r1", "client_order_id": "rnx", "method": "place", "at": at(9, 0)}
    )
    with pytest.raises(JournalError):
        env.journal.discard_armed("r1", "rnx")
    assert env.journal.get_intent("rnx") is not None and env.journal.get_run("r1") is not None


def test_close_interrupted_run_only_closes_a_run_still_running(tmp_path):
    env = make_env(tmp_path)
    _intent(env)
    env.journal.close_interrupted_run("r1", at(9, 5), "interrupted: daemon d1 stopped while running")
    run = env.journal.get_run("r1")
    assert run.status is RunStatus.INTERRUPTED and run.message.startswith("interrupted")
    env.journal.finish_run("r1", RunStatus.SUCCEEDED, at(9, 6))  # e.g. its daemon was alive after all
    env.journal.close_interrupted_run("r1", at(9, 7), "interrupted again")
    assert env.journal.get_run("r1").status is RunStatus.SUCCEEDED


async def test_second_start_of_the_same_run_resumes_without_reexecuting(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(ENTRY_EXIT)
    first = await env.run(pb)
    assert first.status is RunStatus.SUCCEEDED and not first.resumed
    placed = len(await env.broker().orders())
    broker = Faulty(env.broker())
    second = await env.run(pb, broker=broker)
    assert second.resumed and second.run_id == first.run_id
    assert broker.calls["place"] == 0
    assert len(await env.broker().orders()) == placed
    assert env.journal.get_run(first.run_id).starts == 2


async def test_interrupted_run_resumes_from_the_unfinished_step(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(ENTRY_EXIT)
    broker = Faulty(env.broker())

    def crash(_order: object, *_: object) -> None:  # dies after the entry, while cancelling at 15:15
        raise KeyboardInterrupt

    broker.hook("cancel", crash)
    with contextlib.suppress(KeyboardInterrupt):
        await env.run(pb, broker=broker)
    run_id = env.journal.list_runs()[0].run_id
    steps = env.journal.steps_of(run_id)
    assert steps["sq"].outcome is StepOutcome.RUNNING and steps["buy"].outcome is StepOutcome.SUCCEEDED
    broker2 = Faulty(env.broker())
    report = await env.run(pb, broker=broker2)
    assert report.resumed and env.steps(report)["sq"] == "succeeded"
    # only the square-off's own exit order is new; the entries were not placed again
    assert broker2.calls["place"] == 1
    assert all(p.quantity == 0 for p in await env.broker().positions())


async def test_unknown_intents_are_reconciled_before_anything_is_sent(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("steps:\n  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}\n")
    order_of_calls: list[str] = []
    # First start: the entry's reply is lost and every lookup fails too -> the step fails, intent UNKNOWN.
    broker = Faulty(env.broker())
    from runner.errors import OutcomeUnknown, Unavailable

    broker.fail("place", OutcomeUnknown("reply lost"), after_send=True)
    for _ in range(40):
        broker.fail("get_order", Unavailable("down"))
    for _ in range(5):  # the run's closing read of the book too
        broker.fail("orders", Unavailable("down"))
    report = await env.run(pb, broker=broker)
    assert report.steps[0].outcome is StepOutcome.FAILED
    (intent,) = env.journal.intents(run_id=report.run_id, step_id="buy")
    assert intent.status is OrderStatus.UNKNOWN
    # Restart: the lookup comes first, the step is re-entered and finds the order instead of re-sending.
    env.journal.reopen_run(report.run_id, env.clock.now())
    with env.engine.begin() as c:
        import sqlalchemy as sa

        from runner.journal.tables import steps

        c.execute(sa.delete(steps).where(steps.c.run_id == report.run_id))
    broker2 = Faulty(env.broker())
    broker2.hook("get_order", lambda cid: order_of_calls.append(f"get_order {cid}"))
    broker2.hook("place", lambda r: order_of_calls.append(f"place {r.client_order_id}"))
    report2 = await env.run(pb, broker=broker2)
    assert order_of_calls[0] == f"get_order {intent.client_order_id}"
    assert env.journal.get_intent(intent.client_order_id).resolution is Resolution.CONFIRMED
    assert f"place {intent.client_order_id}" not in order_of_calls
    assert [o.client_order_id for o in await env.broker().orders()].count(intent.client_order_id) == 1
    assert report2.steps[0].outcome is StepOutcome.SUCCEEDED


def test_redact_hides_secret_keys_and_secret_objects():
    data = {
        "password": "hunter2",
        "side": "BUY",
        "nested": [{"accessToken": "abc", "mpin": "1234"}],
        "creds": Secret("s3cret"),
        "header": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abcdef",
        "sid": "x",
        "instrument_key": "NSE X",
    }
    out = redact(data)
    text = json.dumps(out)
    for secret in ("hunter2", "abc", "1234", "s3cret", "eyJhbGci"):
        assert secret not in text
    assert out["side"] == "BUY" and out["instrument_key"] == "NSE X"


def test_log_lines_are_json_with_bound_context_and_redacted():
    stream = io.StringIO()
    configure(json=True, stream=stream, force=True)
    try:
        get_logger(run="r1", playbook="p").bind(step="s", client_order_id="rnx").info("login", totp="123456")
        line = json.loads(stream.getvalue().strip())
        assert line["run"] == "r1" and line["step"] == "s" and line["client_order_id"] == "rnx"
        assert line["totp"] == "***"
    finally:
        configure(force=True)


async def test_engine_events_carry_run_playbook_step_and_client_id(tmp_path):
    env = make_env(tmp_path)
    with structlog.testing.capture_logs() as logs:
        await env.run(playbook("steps:\n  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}\n"))
    send = next(e for e in logs if e["event"] == "order_send")
    assert send["run"] and send["playbook"] == "t" and send["step"] == "buy" and send["client_order_id"]
