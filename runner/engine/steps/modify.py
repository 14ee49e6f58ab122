"""``modify``: change an earlier order when its conditions hold, or chase its price tick by tick.

Each change is verified by reading the order back. A chase counts the steps already taken from the
distance between the order's price and its original price, so a resumed run does not chase twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal

from runner.engine.changes import applied
from runner.engine.gateway import is_live
from runner.engine.steps.cancel import condition_holds
from runner.engine.steps.common import (
    RunContext,
    StepError,
    StepResult,
    current_orders,
    describe,
    enrich,
    reference_price,
    resolve_price,
    snap,
)
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import events
from runner.model import Modification, Order, OrderStatus, OrderType, Side
from runner.playbook.ltp_offsets import PriceRole
from runner.playbook.models import Chase, LtpPrice, ModifyStep, Playbook, Price

RESOLVED_EVENT = "resolved_price"  # journal event kind: an LTP-relative price resolved by a modify step


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
    resolved = await resolve_relative(ctx, step, order)
    if step.chase is not None:
        return await chase(ctx, step.chase, intent, order, resolved)
    change = modification_of(ctx.playbook, step, resolved)
    return verdict(await ctx.gateway.modify(order, change), change)


def relative_fields(step: ModifyStep) -> dict[str, tuple[LtpPrice, PriceRole]]:
    """The step's market-relative prices, by name: price, trigger_price, limit_price (of the chase)."""
    fields = {
        "price": (step.price, PriceRole.LIMIT),
        "trigger_price": (step.trigger_price, PriceRole.TRIGGER),
    }
    if step.chase is not None:
        fields["limit_price"] = (step.chase.limit_price, PriceRole.LIMIT)
    return {name: (v, role) for name, (v, role) in fields.items() if isinstance(v, LtpPrice)}


def resolve_fields(pb: Playbook, step: ModifyStep, order: Order, ltp: Decimal | None) -> dict[str, Decimal]:
    """Absolute prices for the step's relative ones, against ``ltp``, for ``order``'s side and tick."""
    ins = enrich(pb, order.instrument)
    out = {}
    for name, (value, role) in relative_fields(step).items():
        price = resolve_price(
            pb, value, ltp=ltp, tick=ins.tick_size, side=order.side, role=role, what=f"{step.id}.{name}"
        )
        assert price is not None
        out[name] = price
    return out


_RESOLVED = re.compile(r"^resolved (\w+) = .* -> (\S+)$")


def journaled_resolutions(journal: Journal, run_id: str, step_id: str) -> dict[str, Decimal]:
    """Prices a modify step of this run already resolved (and so must reuse)."""
    return {
        m[1]: Decimal(m[2])
        for row in journal.rows(events, run_id)
        if row["kind"] == RESOLVED_EVENT
        and row["step_id"] == step_id
        and (m := _RESOLVED.match(row["message"]))
    }


async def resolve_relative(ctx: RunContext, step: ModifyStep, order: Order) -> dict[str, Decimal]:
    """Resolve the step's LTP-relative prices once: journaled as events before the change is sent, and
    read back (never resolved again) when a resumed run repeats the step."""
    fields = relative_fields(step)
    if not fields:
        return {}
    journal = ctx.gateway.journal
    earlier = journaled_resolutions(journal, ctx.run_id, step.id)
    if set(fields) <= set(earlier):
        return {name: earlier[name] for name in fields}
    ltp = await reference_price(ctx, ctx.enrich(order.instrument))
    resolved = resolve_fields(ctx.playbook, step, order, ltp)
    for name, price in resolved.items():
        journal.record_event(
            ctx.run_id,
            RESOLVED_EVENT,
            f"resolved {name} = {fields[name][0].offset.label} of {ltp} -> {price}",
            ctx.clock.now(),
            step_id=step.id,
            client_order_id=order.client_order_id,
        )
    return resolved


def modification_of(
    pb: Playbook, step: ModifyStep, resolved: Mapping[str, Decimal] | None = None
) -> Modification:
    """``resolved``: absolute values of the step's LTP-relative prices (see :func:`resolve_relative`)."""
    resolved = resolved or {}

    def price(name: str, value: Price | None) -> Decimal | None:
        if isinstance(value, LtpPrice):
            if name not in resolved:
                raise StepError(f"{step.id}.{name} is relative to LTP: it is resolved when the step runs")
            return resolved[name]
        return pb.resolve_decimal(value) if value is not None else None

    return Modification(
        price=price("price", step.price),
        trigger_price=price("trigger_price", step.trigger_price),
        quantity=pb.resolve_int(step.quantity) if step.quantity is not None else None,
        order_type=OrderType.MARKET if step.to_market else None,
    )


def chase_cap(pb: Playbook, spec: Chase, resolved: Mapping[str, Decimal] | None = None) -> Decimal | None:
    if isinstance(spec.limit_price, LtpPrice):
        if resolved is None or "limit_price" not in resolved:
            raise StepError("chase.limit_price is relative to LTP: it is resolved when the step runs")
        return resolved["limit_price"]
    return pb.resolve_decimal(spec.limit_price) if spec.limit_price is not None else None


def chase_step(spec: Chase, tick_size: Decimal | None) -> Decimal:
    """The chase's step in rupees: ``tick``, or ``ticks`` × the instrument's tick size."""
    try:
        return spec.step_size(tick_size)
    except ValueError as exc:
        raise StepError(str(exc)) from None


def next_chase_price(
    price: Decimal, side: Side, spec: Chase, tick_size: Decimal | None, cap: Decimal | None
) -> Decimal:
    """One chase step (``tick`` rupees or ``ticks`` ticks) towards the market (BUY up, SELL down), never
    beyond ``cap``."""
    target = snap(price + Decimal(side.sign) * chase_step(spec, tick_size), tick_size, side)
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


async def chase(
    ctx: RunContext, spec: Chase, intent: Intent, order: Order, resolved: Mapping[str, Decimal] | None = None
) -> StepResult:
    gw = ctx.gateway
    if order.price is None or intent.request.price is None:
        raise StepError("chase needs a LIMIT order with a price")
    origin = first_price(ctx, intent)
    cap = chase_cap(ctx.playbook, spec, resolved)
    tick_size = intent.request.instrument.tick_size or order.instrument.tick_size  # the master's, if rolling
    done = int(abs(order.price - origin) / chase_step(spec, tick_size))
    rested = False  # the order's current price has stood for a whole interval
    for number in range(done + 1, spec.max + 1):
        await ctx.clock.sleep(ctx.seconds(spec.every))
        rested = True
        order = await gw.read(order)
        if not is_live(order):
            break
        assert order.price is not None
        target = next_chase_price(order.price, order.side, spec, tick_size, cap)
        if target == order.price:
            continue  # at the limit price: keep waiting, never beyond it
        change = Modification(price=target)
        order = await gw.modify(order, change, chase_step=number)
        rested = False
        if not applied(order, change) and is_live(order):
            return StepResult.failed(
                "chase modify not confirmed: " + describe(order), (order.client_order_id,)
            )
    if spec.then_market and not rested and is_live(order):
        # the last price gets its interval like every other step before the order goes to market
        await ctx.clock.sleep(ctx.seconds(spec.every))
        order = await gw.read(order)
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
