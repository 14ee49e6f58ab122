"""Rolling instruments resolved to concrete contracts, once per run, when the first step using them runs.

Before a step runs, :func:`resolve_for_step` makes every instrument alias the step names concrete in
``ctx.playbook`` (a copy whose ``instruments`` hold fixed specs): first the contracts this run already
journaled (a resumed run never re-resolves: the price may have moved since), then, for the rest, the
broker's instrument master (``instrument_master()``) and the underlying's fresh LTP pick the contract
(:mod:`runner.playbook.rolling`), which is journaled (:mod:`runner.journal.resolved`) before the step
builds any order. The underlying's price is read once per run: every ATM strike on one underlying in a
run is set from the same LTP (a straddle's two legs, placed by two steps, share one strike). Anything
missing (no master, no LTP, no such expiry or strike) fails the step with
:class:`InstrumentUnresolved`, nothing sent; an LTP outside the listed strikes refuses it
(:class:`InstrumentRefused`), nothing sent. Client order ids do not depend on the contract (run, slot,
leg, attempt), so they stay deterministic.

``runner plan`` and ``rehearse`` resolve through the same :func:`resolve_spec`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from runner.brokers.instruments import InstrumentMaster
from runner.engine.steps.common import RunContext, StepError, StepRefused, reference_price
from runner.errors import InstrumentUnknown
from runner.journal.resolved import ResolvedInstrument, ResolvedInstruments
from runner.model import Instrument
from runner.playbook.models import InstrumentSpec, Playbook, RollingExpiry, Underlying
from runner.playbook.rolling import (
    DEFAULT_UNDERLYING_EXCHANGE,
    AtmOutsideBand,
    RollingUnresolved,
    pick_expiry,
    pick_strike,
)

_STORE = "rolling.store"
_MASTER = "rolling.master"
_LTPS = "rolling.ltps"  # underlying key -> the LTP this run's ATM strikes on it were set from

PriceOf = Callable[[Instrument], Awaitable[Decimal]]


class InstrumentUnresolved(StepError):
    """A rolling instrument could not be resolved (no master, no LTP, no such expiry or strike)."""


class InstrumentRefused(StepRefused):
    """A rolling instrument's ATM strike is refused: the underlying's LTP lies outside the listed strikes
    (:class:`~runner.playbook.rolling.AtmOutsideBand`). The step is REFUSED, nothing sent."""


def rolling_aliases(pb: Playbook) -> set[str]:
    return {alias for alias, spec in pb.instruments.items() if spec.is_rolling}


def step_aliases(step: BaseModel) -> list[str]:
    """Instrument aliases a step names (``instrument:`` of an order or leg, ``instruments:`` of a filter)."""
    found: list[str] = []

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), name)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and key in ("instrument", "instruments") and value not in found:
            found.append(value)

    walk(step, None)
    return found


def underlying_of(pb: Playbook, spec: InstrumentSpec) -> tuple[str | None, Instrument]:
    """(alias or None, instrument) whose LTP sets ``spec``'s ATM strike. An alias must be concrete by now."""
    ref = spec.underlying
    if isinstance(ref, str):
        return ref, pb.instruments[ref].to_instrument()
    if isinstance(ref, Underlying):
        return None, Instrument(exchange=ref.exchange, symbol=ref.symbol)
    exchange = DEFAULT_UNDERLYING_EXCHANGE.get(spec.exchange)
    if exchange is None:  # the validator requires `underlying:` here
        raise InstrumentUnresolved(
            f"{spec.rule()}: name its underlying (underlying: alias or {{exchange, symbol}})"
        )
    return None, Instrument(exchange=exchange, symbol=spec.symbol)


def dependencies(pb: Playbook, aliases: list[str]) -> Iterator[str]:
    """``aliases`` with each one's underlying alias chain first (an underlying may be rolling itself)."""
    seen: set[str] = set()
    for alias in aliases:
        chain: list[str] = []
        ref: str | None = alias
        while isinstance(ref, str) and ref in pb.instruments and ref not in seen and ref not in chain:
            chain.append(ref)
            nxt = pb.instruments[ref].underlying
            ref = nxt if isinstance(nxt, str) and isinstance(pb.instruments[ref].strike, str) else None
        for name in reversed(chain):
            seen.add(name)
            yield name


async def resolve_spec(
    pb: Playbook,
    alias: str,
    master: InstrumentMaster,
    price_of: PriceOf,
    trading_day: dt.date,
) -> tuple[Instrument, Instrument | None, Decimal | None]:
    """(concrete contract with the master's lot/tick/freeze, underlying used, its LTP) for rolling
    ``alias``. Underlying aliases must already be concrete in ``pb``."""
    spec = pb.instruments[alias]
    what = f"instrument '{alias}' ({spec.rule()})"
    ex, sym = spec.exchange, spec.symbol
    try:
        expiry: dt.date | None
        if isinstance(spec.expiry, RollingExpiry):
            listed = master.expiries(ex, sym)
            if spec.option_type is not None:
                listed = [e for e in listed if master.strikes(ex, sym, e)]
            else:
                listed = [e for e in listed if _listed(master, Instrument(ex, sym, expiry=e))]
            expiry = pick_expiry(listed, spec.expiry.nearest, spec.expiry.offset, trading_day, what=what)
        else:
            expiry = spec.expiry
        underlying: Instrument | None = None
        ltp: Decimal | None = None
        strike: Decimal | None
        if isinstance(spec.strike, str):
            assert expiry is not None and spec.atm_steps is not None  # the validator requires an expiry
            _, underlying = underlying_of(pb, spec)
            ltp = await price_of(underlying)
            strikes = master.strikes(ex, sym, expiry)
            strike = pick_strike(strikes, ltp, spec.atm_steps, what=what, underlying=underlying.key)
        else:
            strike = spec.strike
        row = master.resolve(Instrument(ex, sym, expiry=expiry, strike=strike, option_type=spec.option_type))
    except AtmOutsideBand as exc:
        raise InstrumentRefused(f"{exc}; nothing was sent") from None
    except RollingUnresolved as exc:
        raise InstrumentUnresolved(f"{exc}; nothing was sent") from None
    except InstrumentUnknown as exc:
        raise InstrumentUnresolved(f"{what}: {exc}; nothing was sent") from None
    found = row.instrument
    concrete = replace(  # the master wins; the playbook's values only fill what it lacks
        found,
        lot_size=found.lot_size or spec.lot_size,
        tick_size=found.tick_size or spec.tick_size,
        freeze_quantity=found.freeze_quantity or spec.freeze_quantity,
        price_multiplier=found.price_multiplier or spec.price_multiplier,
    )
    return concrete, underlying, ltp


def _listed(master: InstrumentMaster, instrument: Instrument) -> bool:
    try:
        master.resolve(instrument)
    except InstrumentUnknown:
        return False
    return True


def allow_contracts(risk: Any, pb: Playbook, contracts: dict[str, Instrument]) -> None:
    """Rolling aliases named in ``limits.allowed_instruments`` allow the contract each resolved to."""
    allowed = pb.limits.allowed_instruments or []
    for alias, ins in contracts.items():
        if risk is not None and alias in allowed:
            risk.allow_instrument(ins.key)


def with_contracts(pb: Playbook, contracts: dict[str, Instrument]) -> Playbook:
    """``pb`` with each alias in ``contracts`` replaced by its concrete contract (rule kept for display in
    :func:`rule_of`)."""
    if not contracts:
        return pb
    instruments = dict(pb.instruments)
    for alias, ins in contracts.items():
        instruments[alias] = InstrumentSpec(
            exchange=ins.exchange,  # a master row of this playbook's exchange
            symbol=ins.symbol,
            expiry=ins.expiry,
            strike=ins.strike,
            option_type=ins.option_type,
            lot_size=ins.lot_size,
            tick_size=ins.tick_size,
            freeze_quantity=ins.freeze_quantity,
            price_multiplier=ins.price_multiplier,
        )
    return pb.model_copy(update={"instruments": instruments})


async def master_of(broker: Any) -> InstrumentMaster | None:
    """The broker's instrument master, or None when the adapter has none (:class:`InstrumentSource`)."""
    get = getattr(broker, "instrument_master", None)
    if get is None:
        return None
    master: InstrumentMaster | None = await get()
    return master


async def resolve_for_step(ctx: RunContext, step: BaseModel) -> None:
    """Make every rolling alias ``step`` names concrete in ``ctx.playbook`` (journaled contracts first)."""
    pending = rolling_aliases(ctx.playbook)
    if not pending:
        return
    store = ctx.extras.get(_STORE)
    if store is None:
        store = ctx.extras[_STORE] = ResolvedInstruments(ctx.gateway.journal.engine)
        journaled = store.of_run(ctx.run_id)  # a resumed run: what an earlier start resolved
        contracts = {a: r.instrument for a, r in journaled.items() if a in pending}
        allow_contracts(ctx.gateway.risk, ctx.playbook, contracts)
        ctx.playbook = with_contracts(ctx.playbook, contracts)
        pending = rolling_aliases(ctx.playbook)
    needed = [a for a in dependencies(ctx.playbook, step_aliases(step)) if a in pending]
    if not needed:
        return
    master = ctx.extras.get(_MASTER)
    if master is None:
        master = await master_of(ctx.gateway.broker)
        if master is None:
            rule = ctx.playbook.instruments[needed[0]].rule()
            raise InstrumentUnresolved(
                f"instrument '{needed[0]}' ({rule}) is rolling, but the account's broker has no instrument "
                "master to resolve it from; nothing was sent"
            )
        ctx.extras[_MASTER] = master

    ltps: dict[str, Decimal] = ctx.extras.setdefault(_LTPS, {})
    for row in store.of_run(ctx.run_id).values() if not ltps else ():
        if row.underlying is not None and row.underlying_ltp is not None:
            ltps.setdefault(row.underlying, row.underlying_ltp)

    async def price_of(ins: Instrument) -> Decimal:
        # One ATM per underlying per run: legs resolved in later steps (a straddle's PE) use the price
        # the first one used, so they land on the same strike.
        if ins.key not in ltps:
            ltps[ins.key] = await reference_price(ctx, ins)
        return ltps[ins.key]

    for alias in needed:
        spec = ctx.playbook.instruments[alias]
        ins, underlying, ltp = await resolve_spec(ctx.playbook, alias, master, price_of, ctx.run_date)
        row = store.record(
            ResolvedInstrument(
                ctx.run_id,
                alias,
                ins,
                spec.rule(),
                underlying.key if underlying else None,
                ltp,
                ctx.clock.now(),
            )
        )
        allow_contracts(ctx.gateway.risk, ctx.playbook, {alias: row.instrument})
        ctx.playbook = with_contracts(ctx.playbook, {alias: row.instrument})
        at = f", {row.underlying} LTP {row.underlying_ltp}" if row.underlying else ""
        ctx.gateway.note(f"{alias} = {row.instrument.key} (rolling: {row.rule}{at})")  # journaled, shown
