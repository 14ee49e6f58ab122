"""``modify``: change an earlier order when its conditions hold, or chase its price tick by tick.

Each change is verified by reading the order back. A chase counts the steps already taken from the
distance between the order's price and its original price, so a resumed run does not chase twice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from runner.gateway import applied, is_live
from runner.journal import Intent
from runner.model import Modification, Order, OrderStatus, OrderType, Side
from runner.playbook import Chase, ModifyStep, Playbook
from runner.steps.cancel import condition_holds
from runner.steps.common import RunContext, StepError, StepResult, current_orders, describe, snap


async def run(ctx: RunContext, step: ModifyStep) -> StepResult:
    found = await current_orders(ctx, step.order)
    if not found:
        return StepResult.skipped(f"order {step.order!r} was never placed")
    if len(found) != 1:
        raise StepError(f"{step.order!r} names {len(found)} orders; modify one leg as spread_id.leg_id")
    intent, order = found[0]
    if step.when.older_than is not None:  # "still open after 30s": wait until the order is that old
        await ctx.clock.sleep_until(
            intent.created_at + dt.timedelta(seconds=ctx.seconds(step.when.older_than))
        )
        order = await ctx.gateway.read(order)
    why = condition_holds(step.when, order, intent.created_at, ctx.clock.now(), ctx)
    if why is not None:
        return StepResult.skipped(f"condition not met: {why}")
    if step.chase is not None:
        return await chase(ctx, step.chase, intent, order)
    change = modification_of(ctx.playbook, step)
    return verdict(await ctx.gateway.modify(order, change), change)


def modification_of(pb: Playbook, step: ModifyStep) -> Modification:
    return Modification(
        price=pb.resolve_decimal(step.price) if step.price is not None else None,
        trigger_price=pb.resolve_decimal(step.trigger_price) if step.trigger_price is not None else None,
        quantity=pb.resolve_int(step.quantity) if step.quantity is not None else None,
        order_type=OrderType.MARKET if step.to_market else None,
    )


def chase_cap(pb: Playbook, spec: Chase) -> Decimal | None:
    return pb.resolve_decimal(spec.limit_price) if spec.limit_price is not None else None


def next_chase_price(
    price: Decimal, side: Side, spec: Chase, tick_size: Decimal | None, cap: Decimal | None
) -> Decimal:
    """One chase step: ``spec.tick`` towards the market (BUY up, SELL down), never beyond ``cap``."""
    target = snap(price + Decimal(side.sign) * spec.tick, tick_size, side)
    if cap is not None:
        target = min(target, cap) if side is Side.BUY else max(target, cap)
    return target


def verdict(order: Order, change: Modification) -> StepResult:
    ids = (order.client_order_id,)
    if applied(order, change) and order.status is not OrderStatus.REJECTED:
        return StepResult.ok("modified: " + describe(order), ids)
    if order.status is OrderStatus.FILLED:
        return StepResult.ok("filled before the change took effect: " + describe(order), ids)
    return StepResult.failed("change not confirmed by the broker: " + describe(order), ids)


async def chase(ctx: RunContext, spec: Chase, intent: Intent, order: Order) -> StepResult:
    gw = ctx.gateway
    if order.price is None or intent.request.price is None:
        raise StepError("chase needs a LIMIT order with a price")
    origin = first_price(ctx, intent)
    cap = chase_cap(ctx.playbook, spec)
    done = int(abs(order.price - origin) / spec.tick)
    for _ in range(done, spec.max):
        await ctx.clock.sleep(ctx.seconds(spec.every))
        order = await gw.read(order)
        if not is_live(order):
            break
        assert order.price is not None
        target = next_chase_price(order.price, order.side, spec, order.instrument.tick_size, cap)
        if target == order.price:
            continue  # at the limit price: keep waiting, never beyond it
        change = Modification(price=target)
        order = await gw.modify(order, change)
        if not applied(order, change) and is_live(order):
            return StepResult.failed(
                "chase modify not confirmed: " + describe(order), (order.client_order_id,)
            )
    if spec.then_market and is_live(order):
        change = Modification(order_type=OrderType.MARKET)
        order = await gw.modify(order, change)
        order = await gw.wait_for(order, lambda o: not is_live(o), gw.tuning.verify_timeout)
        return verdict(order, change)
    if order.status is OrderStatus.FILLED or is_live(order):
        return StepResult.ok(f"chased to {order.price}: " + describe(order), (order.client_order_id,))
    return StepResult.failed(describe(order), (order.client_order_id,))


def first_price(ctx: RunContext, intent: Intent) -> Decimal:
    """The slot's original price (attempt 0), even after cancel+replace bumped the attempt."""
    first = [
        i
        for i in ctx.gateway.journal.intents(run_id=ctx.run_id, slot=intent.slot)
        if i.leg == intent.leg and i.attempt == 0
    ]
    price = (first[0] if first else intent).request.price
    assert price is not None
    return price
