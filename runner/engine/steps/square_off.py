"""``square_off``: cancel open orders (verified), close net positions matching the filter in slices no
larger than the freeze quantity, escalate limit -> market after the timeout, then verify flat by reading
positions back.

Scope (``scope:``): ``account`` closes every net position the filter selects. ``playbook`` / ``{tag: X}``
close only the net of that scope's journaled fills per instrument and product (:func:`scope_net`), capped
by the broker's net of the same sign (:func:`own_part`), so two strategies on one account do not close
each other's trades; only the scope's open orders are cancelled. The horizon is the run's trading day
(intents journaled since local midnight in the playbook's timezone): positions carried from earlier days
are outside every scope. Exits count against the scope: they belong to the playbook's run and carry the
scope's tag, so a second scoped square-off finds nothing left to close. ``filter.this_run_only`` is the
narrowest scope: this run's own orders.

Client ids: slot ``<step>:<instrument>:<product>``, leg ``round * 1000 + slice``. A resumed square-off first
settles its own earlier orders (found and, if working, cancelled; or proven absent by the gateway's rule),
re-reads positions and closes what is left in a new round, so nothing is closed twice. An earlier exit
neither found nor proven absent fails the step: nothing more is placed while it may still fill.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import cast

from runner.brokers.base import unreadable_positions
from runner.brokers.read_back import read_back_after
from runner.engine.gateway import Missing, is_live
from runner.engine.leases import inflight_elsewhere
from runner.engine.steps.cancel import cancel_all, open_matching
from runner.engine.steps.common import (
    RunContext,
    StepResult,
    describe,
    matches_filter,
    run_client_ids,
    snap,
    wait_all,
)
from runner.errors import BrokerError
from runner.journal.joined import JoinedJournal
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, StepOutcome
from runner.model import Instrument, Modification, Order, OrderRequest, OrderStatus, OrderType, Position, Side
from runner.playbook.models import NoPrice, Playbook, SquareOffScope, SquareOffStep, TagScope

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


def own_part(net: int, own: int) -> int:
    """The part of a broker net position ``net`` a run may close: its own net ``own`` when it points the
    same way, never more than the broker holds (so a close never flips or grows the position)."""
    if net > 0 and own > 0:
        return min(net, own)
    if net < 0 and own < 0:
        return max(net, own)
    return 0


def selected(pb: Playbook, step: SquareOffStep, positions: Iterable[Position]) -> list[Position]:
    """Non-flat positions the step's filter selects (whoever's they are)."""
    # A position has no client id: ``this_run_only`` applies to it through caps, not the filter.
    f = step.filter.model_copy(update={"this_run_only": False})
    out = []
    for p in positions:
        side = Side.BUY if p.quantity > 0 else Side.SELL  # filter side = the position's side
        if p.quantity and matches_filter(
            pb,
            f,
            instrument=p.instrument,
            product=p.product,
            side=side,
            tag=None,
            client_order_id=None,
            ours=None,
        ):
            out.append(p)
    return out


def positions_to_close(
    pb: Playbook, step: SquareOffStep, positions: Iterable[Position], caps: Mapping[str, int] | None
) -> list[Position]:
    """Non-flat positions the step's filter selects, with the quantity to close. ``caps`` (a scope's
    net, :func:`scope_net`; ``this_run_only``: the run's own) limits each to that net part; others stay."""
    out = []
    for p in selected(pb, step, positions):
        if caps is not None:
            qty = own_part(p.quantity, caps.get(position_key(p), 0))
            if qty == 0:
                continue
            p = dataclasses.replace(p, quantity=qty)
        out.append(p)
    return out


def scope_label(step: SquareOffStep, pb: Playbook) -> str | None:
    """Whose net a step closes, for messages; None for the whole account."""
    if step.filter.this_run_only:
        return "this run"
    if isinstance(step.scope, TagScope):
        return f"tag {step.scope.tag!r}"
    if step.scope is SquareOffScope.PLAYBOOK:
        return f"playbook {pb.name!r}"
    return None


def scope_since(run_date: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The horizon of a scope: local midnight of the run's trading day."""
    return dt.datetime.combine(run_date, dt.time(0), tzinfo=tz)


def scope_intents(
    journal: Journal, account: str, pb: Playbook, step: SquareOffStep, since: dt.datetime
) -> list[Intent] | None:
    """The journaled intents of a ``playbook`` / ``{tag: X}`` scope (None: ``account``)."""
    if isinstance(step.scope, TagScope):
        return journal.scope_intents(account, since, tag=step.scope.tag)
    if step.scope is SquareOffScope.PLAYBOOK:
        return journal.scope_intents(account, since, playbook=pb.name)
    return None


def exit_tag(step: SquareOffStep) -> str | None:
    """A tag-scoped square-off's exits carry the tag: they count against the scope."""
    return step.scope.tag if isinstance(step.scope, TagScope) else None


def left_alone(
    pb: Playbook, step: SquareOffStep, positions: Iterable[Position], caps: Mapping[str, int] | None
) -> list[str]:
    """What a scoped square-off does not close of the positions its filter selects, and why."""
    label = scope_label(step, pb)
    if caps is None or label is None:
        return []
    out = []
    for p in selected(pb, step, positions):
        own = caps.get(position_key(p), 0)
        qty = own_part(p.quantity, own)
        where = f"{p.instrument.key} {p.product.value} {p.quantity:+d}"
        if qty == p.quantity:
            if own != qty:
                out.append(f"{where}: {label}'s net {own:+d} capped by the broker's")
            continue
        why = (
            f"{label} has no net there"
            if own == 0
            else f"{label}'s net is {own:+d}" + (", the other way" if qty == 0 else "")
        )
        kept = "left alone" if qty == 0 else f"{qty:+d} closed, {p.quantity - qty:+d} left alone"
        out.append(f"{where}: {kept} ({why})")
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
            tag=exit_tag(step),
        )
        for qty in slices(abs(pos.quantity), instrument)
    ]


def next_round(own: Iterable[Intent], slot: str) -> int:
    """A resumed square-off closes what is left in a new round of client ids."""
    rounds = [i.leg // ROUND for i in own if i.slot == slot]
    return max(rounds) + 1 if rounds else 0


def run_net(intents: Iterable[Intent]) -> dict[str, int]:
    """Signed net filled quantity per instrument|product among ``intents`` (a run's own exposure: its
    entries, unwinds and earlier square-off slices; for ``this_run_only`` square-offs)."""
    net: dict[str, int] = {}
    for i in intents:
        if i.filled_quantity:
            key = f"{i.request.instrument.key}|{i.request.product.value}"
            net[key] = net.get(key, 0) + i.filled_quantity * i.request.side.sign
    return net


async def _own_net(ctx: RunContext) -> dict[str, int]:
    """:func:`run_net` of this run after reading back its unsettled orders (a fill may not be journaled)."""
    gw = ctx.gateway
    for i in gw.journal.intents(run_id=ctx.run_id):
        if not i.status.is_terminal:
            await gw.lookup(i.client_order_id)
    return run_net(gw.journal.intents(run_id=ctx.run_id))


def _scope_intents(ctx: RunContext, step: SquareOffStep) -> list[Intent] | None:
    since = scope_since(ctx.run_date, ctx.tz)
    return scope_intents(ctx.gateway.journal, ctx.gateway.account, ctx.playbook, step, since)


async def scope_net(ctx: RunContext, step: SquareOffStep) -> dict[str, int] | None:
    """The net a step may close per instrument|product (None: the whole account). A scope's working
    orders are read back first (one day-book read; our own run's by lookup), so a fill the journal has
    not seen yet counts. Other runs' orders still in flight were waited for (:func:`others_settled`)."""
    if step.filter.this_run_only:
        return await _own_net(ctx)
    scoped = _scope_intents(ctx, step)
    if scoped is None:
        return None
    gw = ctx.gateway
    working = [i for i in scoped if not i.status.is_terminal]
    for i in working:
        if i.run_id == ctx.run_id:
            await gw.lookup(i.client_order_id)
    if others := [i.client_order_id for i in working if i.run_id != ctx.run_id]:
        await gw.refresh(others)
    return run_net(_scope_intents(ctx, step) or ())


async def others_settled(ctx: RunContext) -> str | None:
    """Wait (up to ``ctx.busy_wait``) until no other live run of the account has an order whose outcome
    is open: only its owner may settle it (reconcile leaves live runs' intents alone, their request may
    be in flight), and until then the position read back is not the whole truth. Why not, or None."""
    gw = ctx.gateway
    deadline = ctx.clock.now() + dt.timedelta(seconds=ctx.busy_wait)
    waited = False
    while left := inflight_elsewhere(gw.journal.engine, gw.account, ctx.run_id):
        if ctx.clock.now() >= deadline:
            runs = sorted({run for _, run in left})
            return (
                f"not closing anything: {len(left)} order(s) of run(s) {', '.join(runs)} still in flight "
                f"({', '.join(cid for cid, _ in left)}) after waiting {ctx.busy_wait:g}s for their runs "
                "to settle them; nothing sent"
            )
        waited = True
        # an owner that died meanwhile will never settle its orders: closed here, reconciled below
        if gw.journal.close_dead_runs(gw.account, ctx.clock.now(), closer=f"square-off run {ctx.run_id}"):
            continue
        await ctx.clock.sleep(gw.tuning.poll_interval)
    if waited:  # a run that finished meanwhile left its unsettled intents to the account's next run: us
        await gw.reconcile()
    return None


async def run(ctx: RunContext, step: SquareOffStep) -> StepResult:
    gw = ctx.gateway
    notes: list[str] = []
    busy = await others_settled(ctx)
    if busy is not None:
        return StepResult(StepOutcome.REFUSED, busy)
    # 1. our own earlier square-off orders (a resumed step) must be settled before positions are read:
    # an exit the broker may still hold (a lagging lookup missed it) would close the position a second
    # time once it fills. Refusing to guess is recoverable; a double close is not.
    own = gw.journal.intents(run_id=ctx.run_id, step_id=step.id)
    settled = [(i, await gw.settle(i)) for i in own]
    unknown = [i.client_order_id for i, s in settled if s is Missing.UNKNOWN]
    if unknown:
        return StepResult.failed(
            "; ".join(
                f"earlier exit {cid} outcome unknown; not placing more; "
                "it will be reconciled on the next start / check the broker"
                for cid in unknown
            ),
            tuple(unknown),
        )
    live_own = [s for _, s in settled if isinstance(s, Order) and is_live(s)]
    if live_own:
        res = await cancel_all(ctx, live_own)
        if res.outcome is not StepOutcome.SUCCEEDED:
            return StepResult.failed("earlier exits could not be cancelled: " + res.message, res.orders)
        notes.append("earlier exits: " + res.message)
    if step.cancel_open_orders:
        ours = run_client_ids(ctx) if step.filter.this_run_only else None
        opens = open_matching(ctx.playbook, step.filter, await gw.open_orders(), ours, by_side=False)
        scoped = _scope_intents(ctx, step)
        if scoped is not None:  # a scoped square-off cancels only the scope's open orders
            mine = {i.client_order_id for i in scoped}
            opens = [o for o in opens if o.client_order_id in mine]
        if opens:
            # each cancel was read back until no longer live (gateway.cancel): that read is the
            # verification, cancel_all fails when any is still live; no second read per order
            res = await cancel_all(ctx, opens)
            notes.append(res.message)
            if res.outcome is not StepOutcome.SUCCEEDED:
                return StepResult.failed("open orders could not be cancelled: " + res.message)
    caps = await scope_net(ctx, step)
    positions = await gw.positions()
    targets = positions_to_close(ctx.playbook, step, positions, caps)
    alone = left_alone(ctx.playbook, step, positions, caps)
    for why in alone:
        gw.note(f"square-off: {why}")
    if alone:
        notes.append("; ".join(alone))
    # Instruments the adapter could not read (a fractional quantity): the rest are closed, these are
    # named and the step ends NOT FLAT, for an operator to close by hand.
    skipped = [f"{u.instrument} unreadable ({u.reason})" for u in unreadable_positions(positions)]
    for why in skipped:
        gw.note(f"square-off: {why}; not closed", level="error")
    refs, unpriced = await _limit_references(ctx, step, targets, notes)
    if unpriced:  # escalation.no_price: fail: nothing sent for these, the step ends NOT FLAT naming them
        targets = [p for p in targets if position_key(p) not in unpriced]
        skipped += unpriced.values()
    if skipped:
        notes.append("NOT FLAT: " + "; ".join(skipped))
    if not targets:
        return (StepResult.failed if skipped else StepResult.ok)("; ".join([*notes, "nothing to square off"]))
    # 2. close every position, sliced.
    placed: list[Order] = []
    journal = gw.journal  # each exit's ack is written with the next exit's intent: one commit per exit
    joined = JoinedJournal(journal, gw.log)
    gw.journal = cast(Journal, joined)
    try:
        with read_back_after() as batch:
            for pos in targets:
                rnd = next_round(own, slot_of(step, pos))
                placed += await _close(ctx, step, pos, rnd, refs.get(position_key(pos)))
        if batch.deferred:  # acknowledged only: one day-book read settles every exit (refusals included)
            placed = await _settled(ctx, placed)
    finally:
        gw.journal = journal
        joined.write_queued()
    # Every exit refused or rejected with nothing filled: no verify window can make it flat.
    if all(o.status.is_terminal and not o.filled_quantity for o in placed):
        reasons = sorted({o.reject_reason or o.status.value for o in placed}) or ["no exit order placed"]
        return StepResult.failed(
            f"NOT FLAT: every exit order ({len(placed)}) was refused or rejected: " + "; ".join(reasons),
            tuple(o.client_order_id for o in placed),
        )
    # 3. escalate: limit orders still working after the timeout go to market.
    if step.escalation is not None:
        timeout = ctx.seconds(step.escalation.timeout)
        placed = await wait_all(ctx, placed, lambda o: not is_live(o), timeout)
        if step.escalation.then_market:
            placed = [
                await gw.modify(o, Modification(order_type=OrderType.MARKET)) if is_live(o) else o
                for o in placed
            ]
    # 4. verify by reading positions back: flat, or (this_run_only) down by exactly the run's own part.
    held = {position_key(p): p.quantity for p in positions}
    expected = {position_key(p): held[position_key(p)] - p.quantity for p in targets}
    verify = ctx.seconds(step.verify_timeout)
    deadline = ctx.clock.now() + dt.timedelta(seconds=verify)
    while True:
        now_held = {position_key(p): p.quantity for p in await gw.positions()}
        left = [p for p in targets if now_held.get(position_key(p), 0) != expected[position_key(p)]]
        if not left or ctx.clock.now() >= deadline:
            break
        await ctx.clock.sleep(gw.tuning.poll_interval)
    ids = tuple(o.client_order_id for o in placed)
    if left:
        return StepResult.failed(
            "NOT FLAT: "
            + ", ".join(
                f"{p.instrument.key} {p.product.value} {now_held.get(position_key(p), 0)}"
                + (f" (expected {want})" if (want := expected[position_key(p)]) else "")
                for p in left
            ),
            ids,
        )
    # The positions read back above are the proof. One day-book read then brings the exits' journal
    # rows up to date (filled, with prices) in one commit, instead of one lookup per order; none when
    # every exit was already read back terminal (its row is final).
    final = all(o.status.is_terminal for o in placed)
    latest = {} if final else {o.client_order_id: o for o in await gw.refresh(ids)}
    filled = sum(latest.get(o.client_order_id, o).status is OrderStatus.FILLED for o in placed)
    what = "flat" if not any(expected.values()) else f"closed {scope_label(step, ctx.playbook)}'s part"
    done = f"{what}: {len(targets)} position(s) closed with {len(placed)} order(s), {filled} filled"
    return (StepResult.failed if skipped else StepResult.ok)("; ".join([*notes, done]), ids)


async def _limit_references(
    ctx: RunContext, step: SquareOffStep, targets: list[Position], notes: list[str]
) -> tuple[dict[str, Decimal], dict[str, str]]:
    """The limit-first escalation's price per position (one ``quotes`` read for all of them), and the
    positions with none fresh enough that ``escalation.no_price: fail`` leaves unclosed (key -> why).
    Under ``market`` (the default) such a position is closed at market, said in a warning note and in
    the step's message: never silently."""
    esc = step.escalation
    if esc is None or not targets:
        return {}, {}
    gw = ctx.gateway
    found = await gw.reference_prices([ctx.enrich(p.instrument) for p in targets])
    prices: dict[str, Decimal] = {}
    unpriced: dict[str, str] = {}
    for pos in targets:
        ref = found[pos.instrument.key]
        if ref.price is not None:
            prices[position_key(pos)] = ref.price
            continue
        what = (
            f"{pos.instrument.key} {pos.product.value} {pos.quantity:+d}: no price reference for a limit "
            f"exit ({ref.why_none()})"
        )
        if esc.no_price is NoPrice.FAIL:
            unpriced[position_key(pos)] = f"{what}; not closed (escalation.no_price: fail), nothing sent"
            gw.note(f"square-off: {unpriced[position_key(pos)]}", level="error")
        else:
            said = f"{what}; closing at market (escalation.no_price: market)"
            gw.note(f"square-off: {said}", level="warning")
            notes.append(said)
    return prices, unpriced


async def _settled(ctx: RunContext, placed: list[Order]) -> list[Order]:
    """The exits as one day-book read shows them (journaled in one commit); one the book does not show
    yet keeps its acknowledgement. A refusal the broker made after its ack is noted as at the place. A
    failed read leaves the acks (as a failed verify read of one order did): the positions decide."""
    gw = ctx.gateway
    try:
        latest = {o.client_order_id: o for o in await gw.refresh([o.client_order_id for o in placed])}
    except BrokerError as exc:  # as a failed verify read: the acks stand, positions read back decide
        gw.note(f"square-off: exits not read back ({type(exc).__name__}: {exc}); verifying by positions",
                level="warning")
        return placed
    out = []
    for order in placed:
        now = latest.get(order.client_order_id, order)
        if now.status is OrderStatus.REJECTED and order.status is not OrderStatus.REJECTED:
            _rejected(ctx, now)
        out.append(now)
    return out


def _rejected(ctx: RunContext, order: Order) -> None:
    cid = order.client_order_id
    ctx.gateway.note("square-off slice rejected: " + describe(order), level="error", cid=cid)


async def _close(
    ctx: RunContext, step: SquareOffStep, pos: Position, rnd: int, ref: Decimal | None
) -> list[Order]:
    gw = ctx.gateway
    ins = ctx.enrich(pos.instrument)
    out = []
    for n, req in enumerate(exit_requests(step, pos, ins, ref)):
        order = await gw.place(req, slot=slot_of(step, pos), leg=rnd * ROUND + n, purpose=Purpose.SQUARE_OFF)
        if order.status is OrderStatus.REJECTED:
            _rejected(ctx, order)
        out.append(order)
    return out
