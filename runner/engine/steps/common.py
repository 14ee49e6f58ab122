"""What every step handler shares: the run context, its result, and playbook -> request translation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from runner.engine.leases import DEFAULT_BUSY_WAIT
from runner.ids import client_order_id
from runner.journal.records import Intent
from runner.journal.tables import StepOutcome
from runner.model import Instrument, Order, OrderRequest, Side
from runner.playbook import ltp_offsets
from runner.playbook.ltp_offsets import PriceRole
from runner.playbook.models import (
    LtpPrice,
    OrderFields,
    OrderFilter,
    Playbook,
    Price,
    parse_duration,
    parse_time,
)

if TYPE_CHECKING:
    from runner.clock import Clock
    from runner.engine.gateway import Gateway

DEFAULT_TICK = Decimal("0.05")


class StepError(Exception):
    """The step cannot be carried out as written (e.g. lots without a lot size). Nothing was sent."""


class StepRefused(StepError):
    """A safety check refuses the step (e.g. an ATM strike from an LTP outside the listed strikes): the
    step is REFUSED, not FAILED. Nothing was sent."""


@dataclass(frozen=True, slots=True)
class StepResult:
    outcome: StepOutcome
    message: str = ""
    orders: tuple[str, ...] = ()  # client ids this step placed or acted on

    @classmethod
    def ok(cls, message: str = "", orders: tuple[str, ...] = ()) -> StepResult:
        return cls(StepOutcome.SUCCEEDED, message, orders)

    @classmethod
    def failed(cls, message: str, orders: tuple[str, ...] = ()) -> StepResult:
        return cls(StepOutcome.FAILED, message, orders)

    @classmethod
    def skipped(cls, message: str) -> StepResult:
        return cls(StepOutcome.SKIPPED, message)


@dataclass
class RunContext:
    playbook: Playbook
    run_id: str
    gateway: Gateway
    clock: Clock
    tz: ZoneInfo
    run_date: dt.date  # the local trading date the run belongs to
    log: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    # seconds to wait for other runs on the account (runner.engine.leases)
    busy_wait: float = DEFAULT_BUSY_WAIT

    def local_instant(self, hhmm: str) -> dt.datetime:
        return dt.datetime.combine(self.run_date, parse_time(hhmm), tzinfo=self.tz)

    def seconds(self, duration: str) -> float:
        return parse_duration(duration).total_seconds()

    def enrich(self, instrument: Instrument) -> Instrument:
        return enrich(self.playbook, instrument)


def enrich(pb: Playbook, instrument: Instrument) -> Instrument:
    """Fill lot/tick/freeze metadata from the playbook's instruments for a broker-reported instrument."""
    if instrument.lot_size and instrument.freeze_quantity and instrument.tick_size:
        return instrument
    for spec in pb.instruments.values():
        if spec.is_rolling:  # not resolved in this run (yet): names no contract
            continue
        known = spec.to_instrument()
        if known.key == instrument.key:
            return Instrument(
                exchange=instrument.exchange,
                symbol=instrument.symbol,
                expiry=instrument.expiry,
                strike=instrument.strike,
                option_type=instrument.option_type,
                lot_size=instrument.lot_size or known.lot_size,
                tick_size=instrument.tick_size or known.tick_size,
                freeze_quantity=instrument.freeze_quantity or known.freeze_quantity,
                price_multiplier=instrument.price_multiplier or known.price_multiplier,
            )
    return instrument


def resolve_price(
    pb: Playbook,
    value: Price | None,
    *,
    ltp: Decimal | None,
    tick: Decimal | None,
    side: Side,
    role: PriceRole,
    what: str,
) -> Decimal | None:
    """A playbook price -> absolute Decimal: a literal, ``${var}``, or ``{ltp: offset}`` against ``ltp``."""
    if value is None:
        return None
    try:
        if isinstance(value, LtpPrice):
            return ltp_offsets.resolve(value.offset, ltp, tick=tick, side=side, role=role, what=what)
        return pb.resolve_decimal(value)
    except ValueError as exc:
        raise StepError(str(exc)) from None


def is_relative(*values: object) -> bool:
    return any(isinstance(v, LtpPrice) for v in values)


def build_request(pb: Playbook, f: OrderFields, ltp: Decimal | None = None) -> OrderRequest:
    """Playbook order fields -> canonical request (client id filled in by the gateway). ``ltp`` resolves
    market-relative prices; without it they raise StepError (they are only known when the step runs)."""
    try:
        ins = pb.instrument(f.instrument)  # a rolling alias not resolved yet: ValueError -> StepError
        if f.quantity is not None:
            qty = pb.resolve_int(f.quantity)
        elif f.lots is not None:
            if not ins.lot_size:
                raise StepError(f"{ins.key}: 'lots' needs the instrument's lot_size")
            qty = pb.resolve_int(f.lots) * ins.lot_size
        else:
            raise StepError("order needs 'quantity' or 'lots'")
        what = f"{f.side.value} {ins.key}"
        tick = ins.tick_size
        price = resolve_price(pb, f.price, ltp=ltp, tick=tick, side=f.side, role=PriceRole.LIMIT, what=what)
        trigger = resolve_price(
            pb, f.trigger_price, ltp=ltp, tick=tick, side=f.side, role=PriceRole.TRIGGER, what=what
        )
        return OrderRequest(
            client_order_id="-",
            instrument=ins,
            side=f.side,
            quantity=qty,
            order_type=f.type,
            product=f.product,
            validity=f.validity,
            price=price,
            trigger_price=trigger,
            disclosed_quantity=f.disclosed_quantity,
            tag=f.tag,
        )
    except ValueError as exc:
        raise StepError(str(exc)) from None


async def request_for(
    ctx: RunContext, f: OrderFields, *, slot: str, leg: int = 0, attempt: int = 0
) -> OrderRequest:
    """The request for a step's order. A market-relative price is resolved here, from the broker's last
    traded price now; if this slot was journaled by an earlier start, its request is reused as it was
    (resolved once, never again). No price available: StepError before anything is sent."""
    if not is_relative(f.price, f.trigger_price):
        return build_request(ctx.playbook, f)
    existing = ctx.gateway.journal.get_intent(client_order_id(ctx.run_id, slot, leg, attempt))
    if existing is not None:
        return existing.request
    ins = ctx.playbook.instrument(f.instrument)
    return build_request(ctx.playbook, f, await reference_price(ctx, ins))


async def prefetch_prices(ctx: RunContext, orders: Sequence[tuple[OrderFields, str, int]]) -> None:
    """Before a step builds several orders (``(fields, slot, leg)``): one ``quotes`` call for every
    market-relative price not resolved by an earlier start, which :func:`request_for` then uses."""
    need = [
        ctx.playbook.instrument(f.instrument)
        for f, slot, leg in orders
        if is_relative(f.price, f.trigger_price)
        and ctx.gateway.journal.get_intent(client_order_id(ctx.run_id, slot, leg, 0)) is None
    ]
    await ctx.gateway.prefetch_prices(need)


async def reference_price(ctx: RunContext, ins: Instrument) -> Decimal:
    """The broker's last traded price for ``ins``; StepError (nothing sent) when there is none fresh
    enough (the message says how old the one refused was)."""
    ref = await ctx.gateway.reference(ins)
    if ref.price is None or ref.price <= 0:
        raise StepError(
            f"{ins.key}: no last traded price available ({ref.why_none()}), so a price relative to LTP "
            "cannot be resolved; nothing was sent"
        )
    return ref.price


def snap(price: Decimal, tick: Decimal | None, side: Side) -> Decimal:
    """Round to the tick in the direction that does not make the price more aggressive."""
    t = tick or DEFAULT_TICK
    mode = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
    return (price / t).to_integral_value(rounding=mode) * t


def describe(order: Order) -> str:
    text = f"{order.side.value} {order.quantity} {order.instrument.key} {order.status.value}"
    if order.filled_quantity:
        if order.filled_quantity != order.quantity:  # "filled" alone already says all of it
            text += f" {order.filled_quantity}/{order.quantity}"
        if order.average_price is not None:
            text += f" @ {order.average_price}"
    if order.reject_reason:
        text += f" ({order.reject_reason})"
    return text


# --- references to earlier orders ---------------------------------------------------------------------


def ref_slots(pb: Playbook, ref: str) -> list[tuple[str, int]]:
    """``place_id`` or ``spread_id`` or ``spread_id.leg_id`` -> (slot, leg) pairs."""
    step_id, _, leg_id = ref.partition(".")
    step = pb.step(step_id)
    if step.kind == "place":
        return [(step.id, 0)]
    if step.kind == "spread":
        legs = [(step.id, i + 1) for i, leg in enumerate(step.legs) if not leg_id or leg.id == leg_id]
        if not legs:
            raise StepError(f"spread {step_id!r} has no leg {leg_id!r}")
        return legs
    raise StepError(f"{ref!r} is a {step.kind} step, not an order")


async def current_orders(ctx: RunContext, ref: str) -> list[tuple[Intent, Order]]:
    """The latest order of each referenced slot, read back from the broker (skips never-placed ones)."""
    found: list[tuple[Intent, Order]] = []
    for slot, leg in ref_slots(ctx.playbook, ref):
        intent = ctx.gateway.current_intent(slot, leg)
        if intent is None:
            continue
        order = await ctx.gateway.lookup(intent.client_order_id)
        found.append((intent, order or ctx.gateway.order_from_intent(intent)))
    return found


async def wait_all(
    ctx: RunContext, orders: Sequence[Order], done: Callable[[Order], bool], timeout: float
) -> list[Order]:
    """Poll the orders until each is ``done`` or one shared deadline passes: the limit is ``timeout``,
    not one timeout per order. Returns the last read of each."""
    gw = ctx.gateway
    deadline = ctx.clock.now() + dt.timedelta(seconds=timeout)
    current = list(orders)
    while not all(done(o) for o in current) and ctx.clock.now() < deadline:
        left = (deadline - ctx.clock.now()).total_seconds()
        await ctx.clock.sleep(max(0.0, min(gw.tuning.poll_interval, left)))
        current = [o if done(o) else await gw.read(o) for o in current]
    return current


def run_client_ids(ctx: RunContext) -> set[str]:
    """Client ids of this run's own orders: what ``this_run_only`` selects (not the playbook's other runs)."""
    return {i.client_order_id for i in ctx.gateway.journal.intents(run_id=ctx.run_id)}


def matches_filter(
    pb: Playbook,
    f: OrderFilter,
    *,
    instrument: Instrument,
    product: Any,
    side: Side | None,
    tag: str | None,
    client_order_id: str | None,
    ours: set[str] | None,
) -> bool:
    if f.exchange is not None and instrument.exchange not in f.exchange:
        return False
    if f.product is not None and product not in f.product:
        return False
    if f.side is not None and side is not f.side:
        return False
    if f.instruments is not None and instrument.key not in {pb.instrument(r).key for r in f.instruments}:
        return False
    if f.tag is not None and tag != f.tag:
        return False
    return not (f.this_run_only and (ours is None or client_order_id not in ours))
