"""Money safety of the gateway: never a blind re-send, limits on every new order and every modify, the
right quantity on cancel + replace, derived leg ids, timed-out modify / cancel re-issued once, and no
"the broker has it" for refusals made on our side. Real paper broker and SQLite journal throughout;
faults injected by wrappers around the broker (tests/helpers/faulty_broker.py), never by patching our code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers.engine import NIFTY_FUT, at, make_env, playbook
from helpers.faulty_broker import Faulty, FaultyMultileg

from runner.brokers.base import Capability
from runner.engine.changes import modified_request
from runner.engine.gateway import Gateway
from runner.engine.killswitch import ControlState, ControlView, GuardedBroker, Mode
from runner.errors import OutcomeUnknown, Unavailable
from runner.ids import client_order_id, leg_client_id
from runner.journal.tables import Resolution, StepOutcome
from runner.model import Modification, Order, OrderRequest, OrderStatus, OrderType, Product, Side

BUY = "steps:\n  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}\n"
BID = "  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}\n"
SPREAD = """\
  - kind: spread
    id: s
    legs:
      - {id: hedge, instrument: pe, side: BUY, lots: 1, role: hedge}
      - {id: short, instrument: ce, side: SELL, lots: 1}
"""


class Killed(BaseException):
    """The process dies here (nothing of ours catches a BaseException that is not an Exception)."""


class Plain(Faulty):
    """Paper as a broker that does not refuse a repeated client id (like the real Indian brokers)."""

    def __init__(self, inner: Any, *, lag: int = 0, drop: frozenset[Capability] = frozenset()) -> None:
        super().__init__(inner)
        self.capabilities = frozenset(inner.capabilities - {Capability.IDEMPOTENT_CLIENT_ID} - drop)
        self.lag = lag  # lookups that miss an order the broker has (a day book scanned late)
        self.looked_up: list[str] = []

    async def get_order(self, client_order_id: str) -> Order | None:
        self.looked_up.append(client_order_id)
        if self.lag > 0:
            self.lag -= 1
            return None
        return await super().get_order(client_order_id)


def only_intent(env: Any, run_id: str) -> Any:
    (intent,) = env.journal.intents(run_id=run_id)
    return intent


# --- 1. an intent once marked ABSENT is still looked up before every send -----------------------------


async def test_death_during_a_resend_of_an_absent_intent_is_found_not_sent_a_third_time(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(BUY)
    # Start 1 dies after the intent is committed, before the request leaves.
    with pytest.raises(Killed):
        await env.run(pb, broker=Plain(env.broker()).fail("place", Killed()))
    # Start 2, well after: the lookup misses, so the step sends it; the process dies as the request leaves.
    env.clock.advance(120)
    second = Plain(env.broker()).fail("place", Killed(), after_send=True)
    with pytest.raises(Killed):
        await env.run(pb, broker=second)
    assert second.calls["place"] == 1
    run_id = env.journal.list_runs()[0].run_id
    assert only_intent(env, run_id).resolution is Resolution.PENDING  # stamped again before the send
    # Start 3: reconciliation finds the order; nothing is sent.
    third = Plain(env.broker())
    report = await env.run(pb, broker=third)
    assert report.ok and third.calls["place"] == 0
    intent = only_intent(env, run_id)
    assert (intent.resolution, intent.status) == (Resolution.CONFIRMED, OrderStatus.FILLED)
    assert len(await env.broker().orders()) == 1


async def test_a_resend_that_also_times_out_is_reconciled_later(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())  # paper refuses repeated ids, so one re-send is allowed
    broker.fail("place", OutcomeUnknown("connection reset"))  # never arrived
    broker.fail("place", OutcomeUnknown("reply lost"), after_send=True)  # the re-send arrived
    for _ in range(4):
        broker.hook("get_order", lambda cid: None)  # the first lookups go through (and miss)
    for _ in range(4):
        broker.fail("get_order", OutcomeUnknown("lookup timed out"))
    broker.fail("orders", OutcomeUnknown("book read timed out"))  # the run's closing read-back too
    report = await env.run(playbook(BUY), broker=broker)
    assert report.steps[0].outcome is StepOutcome.FAILED
    assert broker.calls["place"] == 2
    cid = only_intent(env, report.run_id).client_order_id
    assert only_intent(env, report.run_id).status is OrderStatus.UNKNOWN
    # Any later start on the account reconciles the finished run's unknown intent.
    other = await env.run(playbook(BUY, name="other"))
    assert other.ok
    intent = env.journal.get_intent(cid)
    assert intent is not None and intent.status is OrderStatus.FILLED
    assert intent.resolution is Resolution.CONFIRMED


# --- 2. no automatic re-send unless the broker refuses repeated client ids -----------------------------


async def test_unknown_outcome_is_not_resent_at_a_broker_without_idempotent_ids(tmp_path):
    env = make_env(tmp_path)
    broker = Plain(env.broker()).fail("place", OutcomeUnknown("connection reset"))  # never arrived
    report = await env.run(playbook(BUY), broker=broker)
    assert broker.calls["place"] == 1
    step = report.steps[0]
    assert step.outcome is StepOutcome.FAILED
    cid = only_intent(env, report.run_id).client_order_id
    assert f"outcome unknown for {cid}; not re-sent" in step.message
    assert only_intent(env, report.run_id).status is OrderStatus.UNKNOWN
    # A start soon after: not found yet, but too recent to call absent.
    env.clock.advance(5)
    await env.run(playbook(BUY, name="soon"), broker=Plain(env.broker()))
    assert env.journal.get_intent(cid).resolution is Resolution.PENDING  # type: ignore[union-attr]
    # A start well after: now the miss proves it never arrived.
    env.clock.advance(120)
    await env.run(playbook(BUY, name="later"), broker=Plain(env.broker()))
    assert env.journal.get_intent(cid).resolution is Resolution.ABSENT  # type: ignore[union-attr]
    assert [o.client_order_id for o in await env.broker().orders()].count(cid) == 0


async def test_lagging_lookups_do_not_cause_a_duplicate(tmp_path):
    env = make_env(tmp_path)
    broker = Plain(env.broker(), lag=10).fail("place", OutcomeUnknown("reply lost"), after_send=True)
    report = await env.run(playbook(BUY), broker=broker)
    assert broker.calls["place"] == 1
    assert report.steps[0].outcome is StepOutcome.FAILED
    cid = only_intent(env, report.run_id).client_order_id
    # Later, the broker's book shows it: reconciliation records the truth.
    env.clock.advance(120)
    await env.run(playbook(BUY, name="later"), broker=Plain(env.broker()))
    intent = env.journal.get_intent(cid)
    assert intent is not None and intent.status is OrderStatus.FILLED
    assert [o.client_order_id for o in await env.broker().orders()].count(cid) == 1


async def test_reconcile_leaves_intents_of_other_running_runs_alone(tmp_path):
    env = make_env(tmp_path)
    # Run A is live elsewhere: its intent is committed and its request about to leave.
    with pytest.raises(Killed):
        await env.run(playbook(BUY, name="a"), broker=Plain(env.broker()).fail("place", Killed()))
    (a_run,) = env.journal.list_runs()
    a_cid = only_intent(env, a_run.run_id).client_order_id
    env.clock.advance(120)
    b = Plain(env.broker())
    report = await env.run(playbook(BUY, name="b"), broker=b)
    assert report.ok
    assert a_cid not in b.looked_up
    assert env.journal.get_intent(a_cid).resolution is Resolution.PENDING  # type: ignore[union-attr]
    # A's own restart reconciles it (and, long after, sends it).
    again = Plain(env.broker())
    assert (await env.run(playbook(BUY, name="a"), broker=again)).ok
    assert again.looked_up[0] == a_cid and again.calls["place"] == 1


# --- 3. limits: each spread leg counted, modifies checked ----------------------------------------------


async def test_each_leg_of_a_native_spread_counts_against_max_orders_per_run(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("limits: {max_orders_per_run: 2}\nsteps:\n" + BUY.split("\n", 1)[1] + SPREAD)
    report = await env.run(pb)
    assert env.steps(report)["s"] == "refused"
    assert "max_orders_per_run" in report.steps[1].message
    assert len(await env.broker().orders()) == 1


async def test_a_modify_cannot_get_around_the_quantity_limit(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(
        "limits: {max_quantity_per_order: 100}\nsteps:\n"
        + BID
        + "  - {kind: modify, id: m, order: bid, quantity: 750}\n"
    )
    report = await env.run(pb)
    assert env.steps(report) == {"bid": "succeeded", "m": "refused"}
    (o,) = await env.broker().open_orders()
    assert o.quantity == 75


# --- 4. cancel + replace: the new total less what filled; checked before cancelling ---------------------


async def test_replace_carries_the_new_total_less_what_filled(tmp_path):
    env = make_env(tmp_path, fill_slice=75)
    pb = playbook(
        "steps:\n"
        "  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 750, type: LIMIT, price: 24600}\n"
        "  - {kind: modify, id: m, order: bid, quantity: 450,"
        " when: {status: [partially_filled], older_than: 2s}}\n"
    )
    broker = Plain(env.broker(), drop=frozenset({Capability.MODIFY}))
    await env.run(pb, broker=broker)
    first, second = sorted(await env.broker().orders(), key=lambda o: o.broker_order_id or "")
    assert first.status is OrderStatus.CANCELLED and 0 < first.filled_quantity < 450
    assert first.filled_quantity + second.quantity == 450


async def test_replace_refused_by_limits_leaves_the_order_working(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(
        "limits: {max_quantity_per_order: 100}\nsteps:\n"
        + BID
        + "  - {kind: modify, id: m, order: bid, quantity: 750}\n"
    )
    broker = Plain(env.broker(), drop=frozenset({Capability.MODIFY}))
    report = await env.run(pb, broker=broker)
    assert env.steps(report)["m"] == "refused"
    assert broker.calls["cancel"] == 0
    (o,) = await env.broker().open_orders()
    assert o.quantity == 75


# --- 5. native legs get derived ids -------------------------------------------------------------------


async def test_native_spread_legs_use_derived_leg_ids(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook("steps:\n" + SPREAD))
    assert report.ok
    group = client_order_id(report.run_id, "s", 0, 0)
    intents = sorted(env.journal.intents(run_id=report.run_id), key=lambda i: i.leg)
    assert [i.client_order_id for i in intents] == [leg_client_id(group, 1), leg_client_id(group, 2)]
    assert {i.group_id for i in intents} == {group}
    assert {o.client_order_id for o in await env.broker().orders()} == {i.client_order_id for i in intents}


async def test_native_spread_resumed_after_a_death_finds_its_legs(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("steps:\n" + SPREAD)
    dying = FaultyMultileg(env.broker()).fail("place_multileg", Killed(), after_send=True)
    with pytest.raises(Killed):
        await env.run(pb, broker=dying)
    again = FaultyMultileg(env.broker())
    report = await env.run(pb, broker=again)
    assert report.ok and again.calls["place_multileg"] == 0
    assert len(await env.broker().orders()) == 2


async def test_native_spread_that_died_before_leaving_is_sent_once_on_restart(tmp_path):
    env = make_env(tmp_path)
    pb = playbook("steps:\n" + SPREAD)
    with pytest.raises(Killed):
        await env.run(pb, broker=FaultyMultileg(env.broker()).fail("place_multileg", Killed()))
    again = FaultyMultileg(env.broker())
    report = await env.run(pb, broker=again)
    assert report.ok and again.calls["place_multileg"] == 1
    intents = env.journal.intents(run_id=report.run_id)
    assert {i.resolution for i in intents} == {Resolution.CONFIRMED}
    assert len(await env.broker().orders()) == 2


# --- 6. a timed-out modify / cancel that did not land is issued once more -------------------------------


async def test_modify_that_timed_out_before_landing_is_issued_again(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("modify", OutcomeUnknown("timeout"))
    report = await env.run(
        playbook("steps:\n" + BID + "  - {kind: modify, id: m, order: bid, price: 24100}\n"), broker=broker
    )
    assert env.steps(report) == {"bid": "succeeded", "m": "succeeded"}
    assert broker.calls["modify"] == 2
    (o,) = await env.broker().open_orders()
    assert o.price == Decimal(24100)


async def test_modify_that_landed_despite_the_timeout_is_not_issued_again(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("modify", OutcomeUnknown("timeout"), after_send=True)
    report = await env.run(
        playbook("steps:\n" + BID + "  - {kind: modify, id: m, order: bid, price: 24100}\n"), broker=broker
    )
    assert env.steps(report)["m"] == "succeeded"
    assert broker.calls["modify"] == 1


async def test_cancel_that_timed_out_before_landing_is_issued_again(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("cancel", OutcomeUnknown("timeout"))
    report = await env.run(
        playbook("steps:\n" + BID + "  - {kind: cancel, id: x, order: bid}\n"), broker=broker
    )
    assert env.steps(report) == {"bid": "succeeded", "x": "succeeded"}
    assert broker.calls["cancel"] == 2
    (o,) = await env.broker().orders()
    assert o.status is OrderStatus.CANCELLED


# --- 7. a refusal on our side is not "the broker has it" -----------------------------------------------


async def test_kill_switch_refusal_is_not_recorded_as_confirmed(tmp_path):
    env = make_env(tmp_path)
    halted = ControlView(ControlState(mode=Mode.HALT, reason="test", since=at(9, 0)))
    report = await env.run(playbook(BUY), broker=GuardedBroker(env.broker(), halted))
    assert report.steps[0].outcome is StepOutcome.REFUSED
    intent = only_intent(env, report.run_id)
    assert intent.status is OrderStatus.REJECTED
    assert intent.resolution is Resolution.ABSENT
    assert await env.broker().orders() == []


async def test_unknown_intents_past_the_reconcile_horizon_are_left_for_an_operator(tmp_path):
    for advance, looked_up in ((3600, True), (5 * 86400, False)):
        env = make_env(tmp_path / str(advance))
        broker = Plain(env.broker(), lag=10)  # the order arrived, but no lookup sees it today
        broker.fail("place", OutcomeUnknown("reply lost"), after_send=True)
        broker.fail("orders", OutcomeUnknown("book read timed out"))  # the run's closing read-back too
        report = await env.run(playbook(BUY), broker=broker)
        cid = only_intent(env, report.run_id).client_order_id
        assert only_intent(env, report.run_id).status is OrderStatus.UNKNOWN

        env.clock.advance(advance)
        later = Plain(env.broker())
        assert (await env.run(playbook(BUY, name="later"), broker=later, slot=env.clock.now())).ok
        # Within the horizon a later start looks it up; after a long weekend the day's book is gone, so
        # it is left UNKNOWN (visible in history) rather than guessed at on every start.
        assert (cid in later.looked_up) is looked_up
        status = only_intent(env, report.run_id).status
        assert status is (OrderStatus.FILLED if looked_up else OrderStatus.UNKNOWN)


# --- 8. a lookup that fails is "unknown", never "absent" ------------------------------------------------


@pytest.mark.parametrize("failure", [OutcomeUnknown("read timed out"), Unavailable("503 on a read")])
async def test_failing_lookups_never_lead_to_a_resend(tmp_path, failure):
    # Paper that takes a repeated client id as a second order (as the real brokers do): a re-send of an
    # order the broker has would be a real duplicate in its book.
    env = make_env(tmp_path, idempotent_client_ids=False)
    pb = playbook(BUY)
    with pytest.raises(Killed):  # the order reaches the broker; the process dies before the reply
        await env.run(pb, broker=Faulty(env.broker()).fail("place", Killed(), after_send=True))
    env.clock.advance(300)  # well past absent_after: a miss now would count as proof of absence
    blind = Faulty(env.broker())
    for _ in range(50):  # every lookup by client id fails (retries included)
        blind.fail("get_order", failure)
    for _ in range(5):  # and so does the run's closing read of the book
        blind.fail("orders", failure)
    report = await env.run(pb, broker=blind)
    assert blind.calls["get_order"] > 0 and blind.calls["place"] == 0
    step = report.steps[0]
    assert step.outcome is StepOutcome.FAILED and "outcome unknown" in step.message
    cid = only_intent(env, report.run_id).client_order_id
    assert only_intent(env, report.run_id).resolution is Resolution.PENDING  # not ABSENT
    assert [o.client_order_id for o in await env.broker().orders()] == [cid]
    # Once lookups answer, the next start reconciles: the order is found; still nothing is sent.
    seeing = Faulty(env.broker())
    await env.run(pb, broker=seeing)
    assert seeing.calls["place"] == 0
    assert only_intent(env, report.run_id).status is OrderStatus.FILLED
    assert [o.client_order_id for o in await env.broker().orders()].count(cid) == 1


async def test_a_miss_after_failed_lookups_still_counts_as_a_miss(tmp_path):
    env = make_env(tmp_path, idempotent_client_ids=False)
    pb = playbook(BUY)
    with pytest.raises(Killed):  # dies before the request leaves: the broker never gets it
        await env.run(pb, broker=Faulty(env.broker()).fail("place", Killed()))
    env.clock.advance(300)
    flaky = Faulty(env.broker()).fail("get_order", OutcomeUnknown("read timed out"))  # reconcile's lookup
    flaky.fail("get_order", OutcomeUnknown("read timed out"))  # the resumed step's first lookup; then answers
    report = await env.run(pb, broker=flaky)
    assert report.ok and flaky.calls["place"] == 1
    assert len(await env.broker().orders()) == 1


# --- 9. cancel + replace into MARKET / SL-M carries no limit price ------------------------------------


@pytest.mark.parametrize(
    ("new_type", "price", "trigger"),
    [
        (OrderType.SL_M, None, Decimal(24600)),
        (OrderType.MARKET, None, None),
        (OrderType.LIMIT, Decimal(24610), None),
    ],
)
async def test_replace_into_another_type_sends_only_the_prices_it_has(tmp_path, new_type, price, trigger):
    env = make_env(tmp_path)
    broker = Plain(env.broker(), drop=frozenset({Capability.MODIFY}))
    sent: list[OrderRequest] = []
    broker.hook("place", lambda r: sent.append(r))
    broker.hook("place", lambda r: sent.append(r))
    run_id = "rn-replace"
    env.journal.start_run(
        run_id, playbook="t", account=env.account, scheduled_for=at(0, 0), mode="run", now=env.clock.now()
    )
    gw = Gateway(broker, env.journal, env.clock, run_id, env.account)
    stop = OrderRequest(
        client_order_id="ignored",
        instrument=NIFTY_FUT,
        side=Side.BUY,
        quantity=75,
        order_type=OrderType.SL,
        price=Decimal(24610),
        trigger_price=Decimal(24600),  # above the market (24500): rests untriggered
    )
    order = await gw.place(stop, slot="stop")
    assert order.status is OrderStatus.OPEN
    replaced = await gw.modify(order, Modification(order_type=new_type), timeout=2)
    assert broker.calls["cancel"] == 1 and len(sent) == 2
    assert (sent[1].order_type, sent[1].price, sent[1].trigger_price) == (new_type, price, trigger)
    assert replaced.order_type is new_type


def test_modified_request_drops_the_prices_the_new_type_does_not_have():
    order = Order(
        client_order_id="c",
        broker_order_id="1",
        instrument=NIFTY_FUT,
        side=Side.BUY,
        quantity=75,
        order_type=OrderType.SL,
        product=Product.MIS,
        status=OrderStatus.OPEN,
        price=Decimal(24610),
        trigger_price=Decimal(24600),
    )
    to_slm = modified_request(order, Modification(order_type=OrderType.SL_M))
    assert (to_slm.price, to_slm.trigger_price) == (None, Decimal(24600))
    to_limit = modified_request(order, Modification(order_type=OrderType.LIMIT, price=Decimal(24550)))
    assert (to_limit.price, to_limit.trigger_price) == (Decimal(24550), None)


async def test_native_spread_resumed_with_a_leg_not_visible_yet_says_outcome_unknown(tmp_path):
    """A lagging lookup (PLAIN brokers) may show one leg of a spread and not yet the other: nothing is
    re-sent and the step fails on an unknown outcome, said in those words like every unresolved send
    (the crash check and operators read them)."""
    env = make_env(tmp_path)
    pb = playbook("steps:\n" + SPREAD)
    dying = FaultyMultileg(env.broker()).fail("place_multileg", Killed(), after_send=True)
    with pytest.raises(Killed):
        await env.run(pb, broker=dying)

    class LegTwoLags(FaultyMultileg):
        def _hidden(self, cid: str) -> bool:
            return cid.endswith("L2")

        async def get_order(self, client_order_id: str):  # type: ignore[no-untyped-def]
            return None if self._hidden(client_order_id) else await super().get_order(client_order_id)

        async def orders(self):  # type: ignore[no-untyped-def]
            return [o for o in await super().orders() if not self._hidden(o.client_order_id)]

        async def open_orders(self):  # type: ignore[no-untyped-def]
            return [o for o in await super().open_orders() if not self._hidden(o.client_order_id)]

    again = LegTwoLags(env.broker())
    report = await env.run(pb, broker=again)
    assert not report.ok and again.calls["place_multileg"] == 0
    (step,) = [s for s in env.journal.steps_of(report.run_id).values() if s.step_id == "s"]
    assert "outcome unknown" in (step.message or "") and "only some legs" in (step.message or "")
    assert len(await env.broker().orders()) == 2
