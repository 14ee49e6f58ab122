"""cancel steps: one order or all open matching a filter; a cancel ack is not a cancel."""

from __future__ import annotations

from decimal import Decimal

from helpers.engine import RELIANCE, at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.model import OrderRequest, OrderStatus, OrderType, Side

TWO_BIDS = """
steps:
  - {kind: place, id: a, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000, tag: entry}
  - {kind: place, id: b, instrument: rel, side: BUY, quantity: 10, type: LIMIT, price: 2800}
"""


async def test_cancel_one_order_verified(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(TWO_BIDS + "  - {kind: cancel, id: c, order: a}\n"))
    assert env.steps(report)["c"] == "succeeded"
    status = {o.instrument.exchange: o.status for o in await env.broker().orders()}
    assert status == {"NFO": OrderStatus.CANCELLED, "NSE": OrderStatus.OPEN}


async def test_delayed_cancel_is_polled_until_it_takes_effect(tmp_path):
    env = make_env(tmp_path, cancel_delay=3.0)  # the ack says pending_cancel for 3 s
    broker = Faulty(env.broker())
    report = await env.run(playbook(TWO_BIDS + "  - {kind: cancel, id: c, order: a}\n"), broker=broker)
    assert env.steps(report)["c"] == "succeeded"
    assert "1 cancelled" in report.steps[2].message
    assert broker.calls["get_order"] >= 2  # read back more than once


async def test_cancel_all_open_with_filter(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(TWO_BIDS + "  - {kind: cancel, id: c, all_open: {exchange: [NSE]}}\n"))
    assert env.steps(report)["c"] == "succeeded"
    status = {o.instrument.exchange: o.status for o in await env.broker().orders()}
    assert status == {"NFO": OrderStatus.OPEN, "NSE": OrderStatus.CANCELLED}


async def test_cancel_all_by_tag(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(TWO_BIDS + "  - {kind: cancel, id: c, all_open: {tag: entry}}\n"))
    assert "1 cancelled" in report.steps[2].message
    assert [o.instrument.exchange for o in await env.broker().open_orders()] == ["NSE"]


async def test_cancel_of_a_filled_order_reports_the_truth(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - {kind: place, id: a, instrument: fut, side: BUY, lots: 1}
  - {kind: cancel, id: c, order: a}
""")
    )
    assert env.steps(report)["c"] == "succeeded"
    assert "1 filled before the cancel" in report.steps[1].message


async def test_cancel_that_never_takes_effect_fails(tmp_path):
    env = make_env(tmp_path, cancel_delay=60.0)
    report = await env.run(playbook(TWO_BIDS + "  - {kind: cancel, id: c, order: a}\n"))
    assert env.steps(report)["c"] == "failed"
    assert "still open" in report.steps[2].message


async def test_this_run_only_cancels_only_this_runs_orders(tmp_path):
    """Not the playbook's earlier runs, not orders placed outside the runner."""
    env = make_env(tmp_path)
    earlier = await env.run(playbook(TWO_BIDS, name="p"), slot=at(9, 0))
    assert earlier.ok
    manual = OrderRequest("manual", RELIANCE, Side.BUY, 3, OrderType.LIMIT, price=Decimal(2700))
    await env.broker().place(manual)
    body = """
steps:
  - {kind: place, id: x, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 23900}
  - {kind: cancel, id: c, all_open: {this_run_only: true}}
"""
    report = await env.run(playbook(body, name="p"), slot=at(9, 15))
    assert env.steps(report) == {"x": "succeeded", "c": "succeeded"}, report.steps[1].message
    (mine,) = env.journal.intents(run_id=report.run_id)
    status = {o.client_order_id: o.status for o in await env.broker().orders()}
    assert status.pop(mine.client_order_id) is OrderStatus.CANCELLED
    assert set(status.values()) == {OrderStatus.OPEN} and len(status) == 3  # two of the earlier run, manual
    assert "1 cancelled" in report.steps[1].message
