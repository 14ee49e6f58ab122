"""``cancel``: one earlier order, or every open order matching a filter. Verified by reading back:
a cancel ack is not a cancel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from runner.engine.gateway import is_live
from runner.engine.steps.common import (
    RunContext,
    StepResult,
    current_orders,
    describe,
    matches_filter,
    run_client_ids,
)
from runner.model import Order, OrderStatus
from runner.playbook.models import CancelStep, OrderCondition, OrderFilter, Playbook


def condition_holds(
    cond: OrderCondition | None, order: Order, placed_at: dt.datetime, now: dt.datetime, ctx: RunContext
) -> str | None:
    """``None`` when every given condition holds, else why not."""
    if cond is None:
        return None
    if cond.status is not None and order.status not in cond.status:
        return f"status is {order.status.value}, not {'/'.join(s.value for s in cond.status)}"
    if cond.unfilled and order.filled_quantity > 0:
        return f"already filled {order.filled_quantity}"
    if cond.older_than is not None and now - placed_at < dt.timedelta(seconds=ctx.seconds(cond.older_than)):
        return f"younger than {cond.older_than}"
    return None


def open_matching(
    pb: Playbook, f: OrderFilter, orders: Iterable[Order], ours: set[str] | None, *, by_side: bool
) -> list[Order]:
    """The live orders a filter selects. ``by_side=False`` ignores ``side`` (a square-off's filter side
    is the position's side, not an order's). ``ours``: client ids for ``this_run_only``."""
    return [
        o
        for o in orders
        if is_live(o)
        and matches_filter(
            pb,
            f,
            instrument=o.instrument,
            product=o.product,
            side=o.side if by_side else None,
            tag=o.tag,
            client_order_id=o.client_order_id,
            ours=ours,
        )
    ]


async def cancel_all(ctx: RunContext, orders: list[Order]) -> StepResult:
    gw = ctx.gateway
    done = [await gw.cancel(o) for o in orders]
    ids = tuple(o.client_order_id for o in done)
    still = [o for o in done if is_live(o)]
    cancelled = sum(o.status is OrderStatus.CANCELLED for o in done)
    filled = sum(o.status is OrderStatus.FILLED for o in done)
    summary = f"{cancelled} cancelled, {filled} filled before the cancel, {len(still)} still open"
    if still:
        return StepResult.failed(summary + ": " + "; ".join(describe(o) for o in still), ids)
    return StepResult.ok(summary, ids)


async def run(ctx: RunContext, step: CancelStep) -> StepResult:
    gw = ctx.gateway
    if step.order is not None:
        found = await current_orders(ctx, step.order)
        if not found:
            return StepResult.skipped(f"order {step.order!r} was never placed")
        if step.when is not None and step.when.older_than is not None:
            oldest = min(i.created_at for i, _ in found)
            await ctx.clock.sleep_until(oldest + dt.timedelta(seconds=ctx.seconds(step.when.older_than)))
            found = await current_orders(ctx, step.order)
        targets = []
        for intent, order in found:
            why = condition_holds(step.when, order, intent.created_at, ctx.clock.now(), ctx)
            if why is None:
                targets.append(order)
        if not targets:
            return StepResult.skipped("condition not met: " + "; ".join(describe(o) for _, o in found))
        return await cancel_all(ctx, [o for o in targets if is_live(o)] or targets)
    assert step.all_open is not None
    ours = run_client_ids(ctx) if step.all_open.this_run_only else None
    orders = open_matching(ctx.playbook, step.all_open, await gw.open_orders(), ours, by_side=True)
    if not orders:
        return StepResult.ok("no open orders matched")
    return await cancel_all(ctx, orders)
