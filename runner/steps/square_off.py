"""``square_off``: cancel open orders (verified), close net positions matching the filter in slices no
larger than the freeze quantity, escalate limit -> market after the timeout, then verify flat by reading
positions back.

Client ids: slot ``<step>:<instrument>:<product>``, leg ``round * 1000 + slice``. A resumed square-off first
settles its own earlier orders, re-reads positions and closes what is left in a new round, so nothing
is closed twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from runner.gateway import is_live
from runner.journal import Intent, Purpose
from runner.model import Instrument, Modification, Order, OrderRequest, OrderStatus, OrderType, Position, Side
from runner.playbook import Playbook, SquareOffStep
from runner.steps.cancel import cancel_all, open_matching
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


def position_key(pos: Position) -> str:
    return f"{pos.instrument.key}|{pos.product.value}"


def positions_to_close(
    pb: Playbook, step: SquareOffStep, positions: Iterable[Position], keys: set[str] | None
) -> list[Position]:
    """Non-flat positions the step's filter selects (``keys``: the run's pairs for ``this_run_only``)."""
    out = []
    for p in positions:
        if p.quantity == 0:
            continue
        side = Side.BUY if p.quantity > 0 else Side.SELL  # filter side = the position's side
        if not matches_filter(
            pb,
            step.filter,
            instrument=p.instrument,
            product=p.product,
            side=side,
            tag=None,
            client_order_id=None,
            ours=None,
        ):
            continue
        if keys is not None and position_key(p) not in keys:
            continue
        out.append(p)
    return out


def exit_requests(
    step: SquareOffStep, pos: Position, instrument: Instrument, reference: Decimal | None
) -> list[OrderRequest]:
    """The closing orders for one position: opposite side, freeze-sized slices, a limit ``limit_offset``
    through ``reference`` when escalating (market when there is no reference or no escalation)."""
    side = Side.SELL if pos.quantity > 0 else Side.BUY
    order_type, price = OrderType.MARKET, None
    if step.escalation is not None and reference is not None:
        offset = step.escalation.limit_offset
        target = reference - offset if side is Side.SELL else reference + offset
        price = snap(target, instrument.tick_size, side)
        order_type = OrderType.LIMIT
    return [
        OrderRequest(
            client_order_id="-",
            instrument=instrument,
            side=side,
            quantity=qty,
            order_type=order_type,
            product=pos.product,
            price=price,
        )
        for qty in slices(abs(pos.quantity), instrument)
    ]


def next_round(own: Iterable[Intent], slot: str) -> int:
    """A resumed square-off closes what is left in a new round of client ids."""
    rounds = [i.leg // ROUND for i in own if i.slot == slot]
    return max(rounds) + 1 if rounds else 0


def run_keys(intents: Iterable[Intent]) -> set[str]:
    """Instrument|product pairs with fills among ``intents`` (for ``this_run_only`` square-offs)."""
    return {f"{i.request.instrument.key}|{i.request.product.value}" for i in intents if i.filled_quantity > 0}


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
        opens = open_matching(ctx.playbook, step.filter, await gw.open_orders(), ours, by_side=False)
        if opens:
            res = await cancel_all(ctx, opens)
            notes.append(res.message)
            if any(is_live(o) for o in [await gw.read(x) for x in opens]):
                return StepResult.failed("open orders could not be cancelled: " + res.message)
    keys = run_keys(gw.journal.intents(run_id=ctx.run_id)) if step.filter.this_run_only else None
    targets = positions_to_close(ctx.playbook, step, await gw.positions(), keys)
    if not targets:
        return StepResult.ok("; ".join([*notes, "nothing to square off"]))
    # 2. close every position, sliced.
    placed: list[Order] = []
    for pos in targets:
        placed += await _close(ctx, step, pos, rnd=next_round(own, slot_of(step, pos)))
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
    wanted = {position_key(p) for p in targets}
    while True:
        left = [p for p in await gw.positions() if position_key(p) in wanted and p.quantity]
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


async def _close(ctx: RunContext, step: SquareOffStep, pos: Position, rnd: int) -> list[Order]:
    gw = ctx.gateway
    ins = ctx.enrich(pos.instrument)
    ref = await gw.reference_price(ins) if step.escalation is not None else None
    if step.escalation is not None and ref is None:
        gw.note(f"{ins.key}: no price reference for a limit exit; closing at market", level="warning")
    out = []
    for n, req in enumerate(exit_requests(step, pos, ins, ref)):
        order = await gw.place(req, slot=slot_of(step, pos), leg=rnd * ROUND + n, purpose=Purpose.SQUARE_OFF)
        if order.status is OrderStatus.REJECTED:
            gw.note("square-off slice rejected: " + describe(order), level="error", cid=order.client_order_id)
        out.append(order)
    return out
