"""square_off: cancel open orders, close net positions in freeze-sized slices, escalate, verify flat."""

from __future__ import annotations

from decimal import Decimal

from engine_helpers import NIFTY_FUT, RELIANCE, at, make_env, playbook

from runner.model import OrderRequest, OrderType, Product, Side
from runner.steps.square_off import slices


def test_slices_respect_freeze_quantity_and_lots():
    assert slices(4500, NIFTY_FUT) == [1800, 1800, 900]
    assert slices(150, NIFTY_FUT) == [150]
    assert slices(7, RELIANCE) == [7]


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
