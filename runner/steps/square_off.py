"""``square_off``: cancel open orders (verified), close net positions matching the filter in slices no
larger than the freeze quantity, escalate limit -> market after the timeout, then verify flat by reading
positions back.

Client ids: slot ``<step>:<instrument>:<product>``, leg ``round * 1000 + slice``. A resumed square-off first
settles its own earlier orders, re-reads positions and closes what is left in a new round, so nothing
is closed twice.
"""

from __future__ import annotations

import datetime as dt

from runner.gateway import is_live
from runner.journal import Purpose
from runner.model import Instrument, Modification, Order, OrderRequest, OrderStatus, OrderType, Position, Side
from runner.playbook import SquareOffStep
from runner.steps.cancel import cancel_all
from runner.steps.common import RunContext, StepResult, describe, matches_filter, snap

ROUND = 1000


def slices(quantity: int, instrument: Instrument) -> list[int]:
    """Split a quantity into orders no larger than the freeze quantity, each a whole number of lots."""
    cap = instrument.freeze_quantity
    if not cap or quantity <= cap:
        return [quantity]
    lot = instrument.lot_size or 1
    size = max(lot, cap // lot * lot)
    full, rest = divmod(quantity, size)
    return [size] * full + ([rest] if rest else [])


def slot_of(step: SquareOffStep, pos: Position) -> str:
    return f"{step.id}:{pos.instrument.key}:{pos.product.value}"


def _selected(
    ctx: RunContext, step: SquareOffStep, positions: list[Position], keys: set[str] | None
) -> list[Position]:
    out = []
    for p in positions:
        if p.quantity == 0:
            continue
        side = Side.BUY if p.quantity > 0 else Side.SELL  # filter side = the position's side
        if not matches_filter(
            ctx,
            step.filter,
            instrument=p.instrument,
            product=p.product,
            side=side,
            tag=None,
            client_order_id=None,
            ours=None,
        ):
            continue
        if keys is not None and f"{p.instrument.key}|{p.product.value}" not in keys:
            continue
        out.append(p)
    return out


async def run(ctx: RunContext, step: SquareOffStep) -> StepResult:
    gw = ctx.gateway
    notes: list[str] = []
    # 1. our own earlier square-off orders (a resumed step) must be settled before positions are read.
    own = [i for i in gw.journal.intents(run_id=ctx.run_id, step_id=step.id)]
    live_own = [o for o in [await gw.lookup(i.client_order_id) for i in own] if o is not None and is_live(o)]
    if live_own:
        await cancel_all(ctx, live_own)
    if step.cancel_open_orders:
        ours = gw.journal.client_ids_of_playbook(ctx.playbook.name) if step.filter.this_run_only else None
        opens = [
            o
            for o in await gw.open_orders()
            if is_live(o)
            and matches_filter(
                ctx,
                step.filter,
                instrument=o.instrument,
                product=o.product,
                side=None,
                tag=o.tag,
                client_order_id=o.client_order_id,
                ours=ours,
            )
        ]
        if opens:
            res = await cancel_all(ctx, opens)
            notes.append(res.message)
            if any(is_live(o) for o in [await gw.read(x) for x in opens]):
                return StepResult.failed("open orders could not be cancelled: " + res.message)
    keys = _run_keys(ctx) if step.filter.this_run_only else None
    targets = _selected(ctx, step, list(await gw.positions()), keys)
    if not targets:
        return StepResult.ok("; ".join([*notes, "nothing to square off"]))
    # 2. close every position, sliced.
    placed: list[Order] = []
    for pos in targets:
        placed += await _close(
            ctx, step, pos, own_rounds=[i.leg // ROUND for i in own if i.slot == slot_of(step, pos)]
        )
    # 3. escalate: limit orders still working after the timeout go to market.
    if step.escalation is not None:
        timeout = ctx.seconds(step.escalation.timeout)
        placed = [await gw.wait_for(o, lambda o: not is_live(o), timeout) for o in placed]
        if step.escalation.then_market:
            placed = [
                await gw.modify(o, Modification(order_type=OrderType.MARKET)) if is_live(o) else o
                for o in placed
            ]
    # 4. verify flat by reading positions back.
    verify = ctx.seconds(step.verify_timeout)
    deadline = ctx.clock.now() + dt.timedelta(seconds=verify)
    wanted = {f"{p.instrument.key}|{p.product.value}" for p in targets}
    while True:
        left = [
            p
            for p in await gw.positions()
            if f"{p.instrument.key}|{p.product.value}" in wanted and p.quantity
        ]
        if not left or ctx.clock.now() >= deadline:
            break
        await ctx.clock.sleep(gw.tuning.poll_interval)
    ids = tuple(o.client_order_id for o in placed)
    if left:
        return StepResult.failed(
            "NOT FLAT: " + ", ".join(f"{p.instrument.key} {p.product.value} {p.quantity}" for p in left), ids
        )
    filled = sum(o.status is OrderStatus.FILLED for o in [await gw.read(o) for o in placed])
    return StepResult.ok(
        "; ".join(
            [*notes, f"flat: {len(targets)} position(s) closed with {len(placed)} order(s), {filled} filled"]
        ),
        ids,
    )


async def _close(ctx: RunContext, step: SquareOffStep, pos: Position, own_rounds: list[int]) -> list[Order]:
    gw = ctx.gateway
    ins = ctx.enrich(pos.instrument)
    side = Side.SELL if pos.quantity > 0 else Side.BUY
    rnd = max(own_rounds) + 1 if own_rounds else 0
    order_type, price = OrderType.MARKET, None
    if step.escalation is not None:
        ref = await gw.reference_price(ins)
        if ref is not None:
            offset = step.escalation.limit_offset
            price = snap(ref - offset if side is Side.SELL else ref + offset, ins.tick_size, side)
            order_type = OrderType.LIMIT
        else:
            gw.note(f"{ins.key}: no price reference for a limit exit; closing at market", level="warning")
    out = []
    for n, qty in enumerate(slices(abs(pos.quantity), ins)):
        req = OrderRequest(
            client_order_id="-",
            instrument=ins,
            side=side,
            quantity=qty,
            order_type=order_type,
            product=pos.product,
            price=price,
        )
        order = await gw.place(req, slot=slot_of(step, pos), leg=rnd * ROUND + n, purpose=Purpose.SQUARE_OFF)
        if order.status is OrderStatus.REJECTED:
            gw.note("square-off slice rejected: " + describe(order), level="error", cid=order.client_order_id)
        out.append(order)
    return out


def _run_keys(ctx: RunContext) -> set[str]:
    """Instrument|product pairs this run traded (for ``this_run_only`` square-offs)."""
    return {
        f"{i.request.instrument.key}|{i.request.product.value}"
        for i in ctx.gateway.journal.intents(run_id=ctx.run_id)
        if i.filled_quantity > 0
    }
