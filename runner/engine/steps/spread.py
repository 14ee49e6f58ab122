"""``spread``: 2-4 legs, native where the broker has Capability.NATIVE_MULTILEG (and mode allows), else
legged one by one (hedge legs first unless ``leg_order: declared``), each leg given ``leg_timeout`` to
fill. On a failed leg the declared ``on_leg_failure`` applies:

* ``unwind``: cancel what is still working, then close every filled quantity at market;
* ``cancel_pending``: cancel what is still working, keep what filled;
* ``keep``: leave everything as it is.
"""

from __future__ import annotations

import dataclasses

from runner.brokers.base import Broker, Capability, MultilegBroker
from runner.brokers.descriptions import describe as describe_broker
from runner.engine.gateway import is_live
from runner.engine.steps.common import (
    RunContext,
    StepError,
    StepResult,
    build_request,
    describe,
    prefetch_prices,
    request_for,
    wait_all,
)
from runner.journal.tables import Purpose
from runner.model import Order, OrderRequest, OrderStatus, OrderType
from runner.playbook.models import Playbook, SpreadLeg, SpreadStep

UNWIND_LEG = 100  # unwind orders use legs 101.. so they never collide with the spread's own legs


def leg_sequence(step: SpreadStep) -> list[int]:
    """Indices of the legs in sending order."""
    order = list(range(len(step.legs)))
    if step.leg_order == "hedge_first":
        order.sort(key=lambda i: (step.legs[i].role != "hedge", i))
    return order


def use_native(ctx: RunContext, step: SpreadStep) -> bool:
    return native_for(ctx.gateway.broker, step)


def native_for(broker: Broker, step: SpreadStep) -> bool:
    """Whether the spread goes as one native order on ``broker``; StepError if it must but cannot."""
    native = Capability.NATIVE_MULTILEG in broker.capabilities and isinstance(broker, MultilegBroker)
    if step.mode == "native" and not native:
        raise StepError(f"broker {broker.name} has no native multileg orders; use mode: auto or legged")
    desc = describe_broker(broker.name)
    limit = desc.multileg_max_legs if desc is not None else None
    if native and limit is not None and len(step.legs) > limit:
        # More legs than one native order takes: auto legs it; native cannot be sent as written.
        if step.mode == "native":
            raise StepError(f"broker {broker.name}'s native multileg orders take at most {limit} legs, "
                            f"not {len(step.legs)}; use mode: auto or legged")
        return False
    return step.mode != "legged" and native


def unwind_request(pb: Playbook, leg: SpreadLeg, filled: Order | OrderRequest, quantity: int) -> OrderRequest:
    """Close ``quantity`` of a filled leg at market."""
    plain = leg.model_copy(update={"type": OrderType.MARKET, "price": None, "trigger_price": None})
    return dataclasses.replace(
        build_request(pb, plain),
        side=filled.side.opposite,
        quantity=quantity,
        order_type=OrderType.MARKET,
        price=None,
        trigger_price=None,
        disclosed_quantity=0,
    )


async def run(ctx: RunContext, step: SpreadStep) -> StepResult:
    native = use_native(ctx, step)
    # Every leg's price is resolved before the first leg leaves (relative prices: LTP now), so a missing
    # price fails the step with nothing sent.
    await prefetch_prices(ctx, [(leg, step.id, i + 1) for i, leg in enumerate(step.legs)])  # one quote read
    requests = [await request_for(ctx, leg, slot=step.id, leg=i + 1) for i, leg in enumerate(step.legs)]
    if native:
        return await _native(ctx, step, requests)
    return await _legged(ctx, step, requests)


async def _legged(ctx: RunContext, step: SpreadStep, requests: list[OrderRequest]) -> StepResult:
    gw = ctx.gateway
    timeout = ctx.seconds(step.leg_timeout)
    orders: dict[int, Order] = {}
    for i in leg_sequence(step):
        order = await gw.place(requests[i], slot=step.id, leg=i + 1)
        order = await gw.wait_for(order, lambda o: o.status.is_terminal, timeout)
        orders[i] = order
        if order.status is not OrderStatus.FILLED:
            name = step.legs[i].id or f"leg {i + 1}"
            return await _on_failure(
                ctx, step, orders, f"{name} not filled within {step.leg_timeout}: {describe(order)}"
            )
    return StepResult.ok(
        "all legs filled: " + "; ".join(describe(orders[i]) for i in sorted(orders)),
        tuple(o.client_order_id for o in orders.values()),
    )


async def _native(ctx: RunContext, step: SpreadStep, requests: list[OrderRequest]) -> StepResult:
    gw = ctx.gateway
    placed = await gw.place_multileg(requests, slot=step.id)
    timeout = ctx.seconds(step.leg_timeout)
    settled = await wait_all(ctx, placed, lambda o: o.status.is_terminal, timeout)  # one deadline
    orders = dict(enumerate(settled))
    if all(o.status is OrderStatus.FILLED for o in orders.values()):
        return StepResult.ok(
            "native spread filled: " + "; ".join(describe(o) for o in orders.values()),
            tuple(o.client_order_id for o in orders.values()),
        )
    bad = "; ".join(describe(o) for o in orders.values() if o.status is not OrderStatus.FILLED)
    return await _on_failure(ctx, step, orders, f"native spread not filled within {step.leg_timeout}: {bad}")


async def _on_failure(ctx: RunContext, step: SpreadStep, orders: dict[int, Order], why: str) -> StepResult:
    gw = ctx.gateway
    ids = tuple(o.client_order_id for o in orders.values())
    if step.on_leg_failure == "keep":
        return StepResult.failed(why + "; legs kept as they are", ids)
    for i, o in list(orders.items()):
        if is_live(o):
            orders[i] = await gw.cancel(o, timeout=ctx.seconds(step.leg_timeout))
    still = [o for o in orders.values() if is_live(o)]
    if step.on_leg_failure == "cancel_pending" or still:
        tail = f"; could not cancel {len(still)} leg(s)" if still else "; pending legs cancelled, fills kept"
        return StepResult.failed(why + tail, ids)
    unwound = []
    for i, o in orders.items():
        if o.filled_quantity <= 0:
            continue
        req = unwind_request(ctx.playbook, step.legs[i], o, o.filled_quantity)
        u = await gw.place(req, slot=step.id, leg=UNWIND_LEG + i + 1, purpose=Purpose.UNWIND)
        u = await gw.wait_for(u, lambda x: x.status.is_terminal, ctx.seconds(step.leg_timeout))
        unwound.append(u)
    bad = [u for u in unwound if u.status is not OrderStatus.FILLED]
    ids += tuple(u.client_order_id for u in unwound)
    if bad:
        return StepResult.failed(why + "; UNWIND INCOMPLETE: " + "; ".join(describe(u) for u in bad), ids)
    return StepResult.failed(why + f"; unwound {len(unwound)} filled leg(s)", ids)
