"""square_off: cancel open orders, close net positions in freeze-sized slices, escalate, verify flat."""

from __future__ import annotations

import contextlib
import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from helpers.engine import NIFTY_FUT, RELIANCE, at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.brokers.read_back import defer_read_back
from runner.engine.steps.square_off import own_part, slices
from runner.errors import BrokerError, Rejected
from runner.journal.tables import Resolution, events
from runner.model import OrderRequest, OrderStatus, OrderType, Product, Side


def test_slices_respect_freeze_quantity_and_lots():
    assert slices(4500, NIFTY_FUT) == [1800, 1800, 900]
    assert slices(150, NIFTY_FUT) == [150]
    assert slices(7, RELIANCE) == [7]


EARLIER_NRML = "steps:\n  - {kind: place, id: e, instrument: fut, side: BUY, lots: 1, product: NRML}\n"


async def _seed(env, *requests: OrderRequest) -> None:
    book = env.broker()
    for r in requests:
        await book.place(r)
    env.clock.advance(1)
    await book.positions()


async def test_square_off_splits_by_freeze_quantity_and_ends_flat(tmp_path):
    env = make_env(tmp_path)
    # A position from an earlier process: 4,500 long in slices of 1,800 (the freeze quantity).
    await _seed(
        env,
        *[
            OrderRequest(f"seed{i}", NIFTY_FUT, Side.BUY, q, product=Product.NRML)
            for i, q in enumerate((1800, 1800, 900))
        ],
        OrderRequest("seed-rel", RELIANCE, Side.SELL, 10, product=Product.MIS),
    )
    await _seed(env, OrderRequest("resting", RELIANCE, Side.BUY, 5, OrderType.LIMIT, price=Decimal(2800)))
    report = await env.run(
        playbook("""
steps:
  - {kind: square_off, id: sq, filter: {}}
""")
    )
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    book = env.broker()
    assert all(p.quantity == 0 for p in await book.positions())
    assert await book.open_orders() == []
    exits = [o for o in await book.orders() if o.client_order_id.startswith("rn")]
    assert sorted(o.quantity for o in exits if o.instrument.key == NIFTY_FUT.key) == [900, 1800, 1800]
    # The journal says what is true at the broker: every exit filled, with its fill recorded.
    intents = {i.client_order_id: i for i in env.journal.intents(run_id=report.run_id)}
    assert set(intents) == {o.client_order_id for o in exits}
    assert {i.status.value for i in intents.values()} == {"filled"}
    assert "4 filled" in report.steps[0].message


async def test_square_off_filter_by_product_leaves_others(tmp_path):
    env = make_env(tmp_path)
    await _seed(
        env,
        OrderRequest("s1", NIFTY_FUT, Side.BUY, 75, product=Product.NRML),
        OrderRequest("s2", RELIANCE, Side.BUY, 10, product=Product.MIS),
    )
    report = await env.run(
        playbook("""
steps:
  - {kind: square_off, id: sq, filter: {product: [MIS]}}
""")
    )
    assert env.steps(report) == {"sq": "succeeded"}
    left = {p.instrument.key: p.quantity for p in await env.broker().positions() if p.quantity}
    assert left == {NIFTY_FUT.key: 75}


async def test_escalation_limit_then_market(tmp_path):
    env = make_env(tmp_path, fill_slice=2)  # the book fills 2 per second: the limit exit is still working
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    env.clock.advance(10)
    report = await env.run(
        playbook("""
steps:
  - {kind: square_off, id: sq, at: "15:15", escalation: {limit_offset: 1, timeout: 2s}}
""")
    )
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    (exit_order,) = [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")]
    assert exit_order.order_type is OrderType.MARKET
    assert env.clock.now() >= at(15, 15, 2)
    modifies = [c for c in env.journal.calls(run_id=report.run_id) if c["method"] == "modify"]
    assert len(modifies) == 1


async def test_limit_exit_fills_without_escalation(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    report = await env.run(
        playbook("""
steps:
  - {kind: square_off, id: sq, escalation: {limit_offset: 1, timeout: 15s}}
""")
    )
    assert env.steps(report) == {"sq": "succeeded"}
    (exit_order,) = [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")]
    assert exit_order.order_type is OrderType.LIMIT and exit_order.price == Decimal(2899)


async def test_nothing_to_square_off(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook("steps:\n  - {kind: square_off, id: sq}\n"))
    assert env.steps(report) == {"sq": "succeeded"}
    assert "nothing to square off" in report.steps[0].message


def test_own_part_never_exceeds_or_flips_the_broker_position():
    assert own_part(225, 150) == 150  # an older 75 stays
    assert own_part(6, 10) == 6  # the run's buy covered an older short: close to flat, never to -4
    assert own_part(-150, -75) == -75
    assert own_part(225, -75) == 0  # the run reduced an older long: nothing of its own to close
    assert own_part(0, 75) == 0 and own_part(75, 0) == 0


async def test_this_run_only_closes_only_the_runs_own_net_quantity(tmp_path):
    env = make_env(tmp_path)
    # An earlier run of the same playbook left 75 NRML long (carried forward: it must survive).
    earlier = await env.run(playbook(EARLIER_NRML, "p"), slot=at(9, 0))
    assert earlier.ok
    await _seed(env, OrderRequest("old-short", RELIANCE, Side.SELL, 4, product=Product.MIS))
    report = await env.run(
        playbook(
            """
steps:
  - {kind: place, id: fut2, instrument: fut, side: BUY, lots: 2, product: NRML}
  - {kind: place, id: rel, instrument: rel, side: BUY, quantity: 10}
  - {kind: square_off, id: sq, filter: {this_run_only: true}}
""",
            "p",
        ),
        slot=at(9, 15),
    )
    assert env.steps(report)["sq"] == "succeeded", report.steps[-1].message
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[NIFTY_FUT.key] == 75  # 225 held, the run's 150 closed
    assert held[RELIANCE.key] == 0  # 6 held of the run's 10: closed to flat, not flipped to -4
    exits = [i for i in env.journal.intents(run_id=report.run_id) if i.step_id == "sq"]
    assert sorted((i.request.instrument.key, i.request.side, i.request.quantity) for i in exits) == [
        (NIFTY_FUT.key, Side.SELL, 150),
        (RELIANCE.key, Side.SELL, 6),
    ]


async def test_without_this_run_only_the_whole_position_is_closed(tmp_path):
    env = make_env(tmp_path)
    earlier = await env.run(playbook(EARLIER_NRML, "p"), slot=at(9, 0))
    assert earlier.ok
    report = await env.run(
        playbook(
            """
steps:
  - {kind: place, id: fut2, instrument: fut, side: BUY, lots: 2, product: NRML}
  - {kind: square_off, id: sq, filter: {}}
""",
            "p",
        ),
        slot=at(9, 15),
    )
    assert env.steps(report)["sq"] == "succeeded", report.steps[-1].message
    assert all(p.quantity == 0 for p in await env.broker().positions())


# --- a resumed square-off never closes twice: every earlier exit is settled before more are placed ----

LAG = 30  # seconds a lookup by client id misses a new order; under Tuning.absent_after (60 s)
SQ_KEEP_OPEN = "steps:\n  - {kind: square_off, id: sq, cancel_open_orders: false}\n"


class Killed(BaseException):
    """The process dies here (nothing of ours catches a BaseException that is not an Exception)."""


async def _lagging_long(tmp_path: Any) -> Any:
    """Non-idempotent paper whose lookups lag (a broker scanning its day book), filling 2 a second,
    with 10 RELIANCE long from an earlier process."""
    env = make_env(tmp_path, fill_slice=2, idempotent_client_ids=False, lookup_lag=LAG)
    await _seed(env, OrderRequest("seed", RELIANCE, Side.BUY, 10))
    env.clock.advance(10)
    assert await _held(env) == 10
    return env


async def _held(env: Any) -> int:
    return sum(p.quantity for p in await env.broker().positions() if p.instrument.key == RELIANCE.key)


async def _exits(env: Any) -> list[Any]:
    return [o for o in await env.broker().orders() if o.client_order_id.startswith("rn")]


async def _first_start(env: Any, *, after_send: bool) -> str:
    broker = Faulty(env.broker()).fail("place", Killed(), after_send=after_send)
    with pytest.raises(Killed):
        await env.run(playbook(SQ_KEEP_OPEN), broker=broker)
    assert broker.calls["place"] == 1
    (intent,) = env.journal.intents()
    return str(intent.client_order_id)


async def test_resumed_square_off_with_an_unknown_exit_fails_instead_of_closing_twice(tmp_path):
    env = await _lagging_long(tmp_path)
    cid = await _first_start(env, after_send=True)
    # Restart a second later: the exit is at the broker (filling), but a lookup does not show it yet.
    env.clock.advance(1)
    report = await env.run(playbook(SQ_KEEP_OPEN))
    assert env.steps(report) == {"sq": "failed"}
    assert f"earlier exit {cid} outcome unknown; not placing more" in report.steps[0].message
    env.clock.advance(2 * LAG)
    assert await _held(env) == 0  # flat, never flipped short
    assert [o.client_order_id for o in await _exits(env)] == [cid]  # exactly one exit at the broker
    assert [i.client_order_id for i in env.journal.intents(run_id=report.run_id)] == [cid]


async def test_resumed_square_off_finds_the_filled_exit_and_sends_no_second(tmp_path):
    env = await _lagging_long(tmp_path)
    cid = await _first_start(env, after_send=True)
    env.clock.advance(LAG + 10)  # the exit filled, and lookups now show it; still under absent_after
    report = await env.run(playbook(SQ_KEEP_OPEN))
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    assert "nothing to square off" in report.steps[0].message
    assert await _held(env) == 0
    assert [o.client_order_id for o in await _exits(env)] == [cid]
    intent = env.journal.get_intent(cid)
    assert intent is not None and intent.status is OrderStatus.FILLED


async def test_resumed_square_off_past_absent_after_replaces_an_absent_exit(tmp_path):
    env = await _lagging_long(tmp_path)
    cid = await _first_start(env, after_send=False)  # died before the exit left: it never arrived
    env.clock.advance(2 * LAG + 30)  # past absent_after: a miss now proves absence
    report = await env.run(playbook(SQ_KEEP_OPEN))
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    env.clock.advance(10)
    assert await _held(env) == 0
    (exit_order,) = await _exits(env)
    assert exit_order.client_order_id != cid and exit_order.quantity == 10
    old = env.journal.get_intent(cid)
    assert old is not None and old.resolution is Resolution.ABSENT


async def test_square_off_reads_each_cancel_back_once_and_positions_twice(tmp_path):
    """The broker reads of one square-off with resting orders, counted: the cancels' own read-back is the
    verification (not a second read of each), one open-orders read serves every cancel, one positions read
    before the closes and one that proves flat (paper fills at once), one day-book read journals the fills."""
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s-rel", RELIANCE, Side.BUY, 10, product=Product.MIS))
    await _seed(
        env,
        *[
            OrderRequest(f"rest{i}", RELIANCE, Side.BUY, 1, OrderType.LIMIT, price=Decimal(2800 + i))
            for i in range(2)
        ],
    )
    broker = Faulty(env.broker())
    report = await env.run(playbook("steps:\n  - {kind: square_off, id: sq, filter: {}}\n"), broker=broker)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    assert await env.broker().open_orders() == []
    reads = {m: n for m, n in broker.calls.items() if m not in ("connect", "place", "cancel")}
    assert broker.calls["cancel"] == 2 and broker.calls["place"] == 1
    assert reads == {"open_orders": 1, "get_order_by_broker_id": 2, "positions": 2, "orders": 1}


class AckFirst(Faulty):
    """A broker that acknowledges first and refuses later (as Kotak's RMS does): inside a read-back batch
    (runner.brokers.read_back) a refused place comes back as its ack; the day book shows the refusal."""

    async def place(self, request: OrderRequest) -> Any:
        if not defer_read_back():
            return await super().place(request)
        with contextlib.suppress(Rejected):
            await super().place(request)
        (booked,) = [o for o in await self.inner.orders() if o.client_order_id == request.client_order_id]
        return dataclasses.replace(booked, status=OrderStatus.PENDING_NEW, reject_reason=None)

    async def quotes(self, instruments: Any) -> Any:  # the limit exit's price reference
        return await self.inner.quotes(instruments)  # type: ignore[attr-defined]


async def test_an_exit_refused_after_its_ack_is_found_by_the_batch_read(tmp_path):
    """Exits acknowledged without their own read back: the one day-book read after them finds the refusal,
    journals it, notes it and fails the step NOT FLAT at once (no verify window can make it flat)."""
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10))
    broker = AckFirst(env.broker())
    report = await env.run(  # a limit 1000 below 2900 is outside the paper book's 20% band: refused
        playbook("steps:\n  - {kind: square_off, id: sq, escalation: {limit_offset: 1000, timeout: 2s}}\n"),
        broker=broker,
    )
    assert env.steps(report) == {"sq": "failed"}, report.steps[0].message
    assert "every exit order (1) was refused or rejected" in report.steps[0].message
    assert broker.calls["place"] == 1 and broker.calls["orders"] == 1  # one book read after the batch
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.status is OrderStatus.REJECTED
    notes = [e["message"] for e in env.journal.rows(events, report.run_id)]
    assert any(n.startswith("square-off slice rejected") for n in notes), notes


async def test_a_failed_batch_read_leaves_the_acks_and_positions_decide(tmp_path):
    """The one day-book read after the exits fails: as a failed verify read of one order, the acks stand,
    a warning says so, and the positions read back still prove the account flat."""
    env = make_env(tmp_path)
    await _seed(env, OrderRequest("s1", RELIANCE, Side.BUY, 10, product=Product.MIS))
    broker = AckFirst(env.broker()).fail("orders", BrokerError("book unavailable"))
    report = await env.run(playbook("steps:\n  - {kind: square_off, id: sq, filter: {}}\n"), broker=broker)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    assert all(p.quantity == 0 for p in await env.broker().positions())
    notes = [e["message"] for e in env.journal.rows(events, report.run_id)]
    assert any("exits not read back" in n for n in notes), notes
    assert broker.calls["orders"] == 2  # the failed batch read, then the final one (the exit was an ack)
