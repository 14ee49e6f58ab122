"""``place``: one order. Succeeds when the broker holds it working or filled; the outcome names the truth."""

from __future__ import annotations

from runner.engine.calls import UNSETTLED
from runner.engine.gateway import is_live
from runner.engine.steps.common import RunContext, StepResult, describe, request_for
from runner.model import OrderStatus, OrderType
from runner.playbook.models import PlaceStep


async def run(ctx: RunContext, step: PlaceStep) -> StepResult:
    gw = ctx.gateway
    request = gw.staged.pop(step.id, None) or await request_for(ctx, step, slot=step.id)
    order = await gw.place(request, slot=step.id)
    if order.status in UNSETTLED:  # no ack yet: read back until the broker says what it has
        order = await gw.wait_for(order, lambda o: o.status not in UNSETTLED, gw.tuning.verify_timeout)
    if order.order_type is OrderType.MARKET and is_live(order):  # a market order should fill: say if it did
        order = await gw.wait_for(order, lambda o: not is_live(o), gw.tuning.market_fill_wait)
    ids = (order.client_order_id,)
    if order.status.is_working or order.status is OrderStatus.FILLED:
        return StepResult.ok(describe(order), ids)
    if order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and order.filled_quantity > 0:
        return StepResult.ok(describe(order), ids)  # e.g. an IOC that filled in part
    return StepResult.failed(describe(order), ids)
