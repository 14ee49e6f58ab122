"""Prices: tick multiples, stop-loss trigger on the right side of its price, LTP-relative stops."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from runner.playbook.checks.doc import Doc
from runner.playbook.checks.sink import Sink
from runner.playbook.ltp_offsets import parse_offset

if TYPE_CHECKING:
    from runner.playbook.checks.orders import Order


def check_ticks(doc: Doc, sink: Sink, o: Order) -> None:
    tick = o.spec.get("tick_size") if o.spec is not None else None
    if tick is None:
        return
    for name, val in (("price", o.price), ("trigger_price", o.trigger)):
        if val is not None and Decimal(val) % Decimal(tick):
            sink.add((*o.path, name), f"{name} {val} is not a multiple of the tick size {tick}")


def check_stop(doc: Doc, sink: Sink, o: Order) -> None:
    """A fixed-price SL: BUY triggers at or below its price, SELL at or above."""
    price, trigger = o.price, o.trigger
    if o.spec is None or o.otype != "SL" or price is None or trigger is None:
        return
    side = o.fields["side"]
    if side == "BUY" and trigger > price:
        sink.add(
            (*o.path, "trigger_price"),
            f"a BUY SL triggers at or below its price (trigger {trigger} > price {price})",
        )
    if side == "SELL" and trigger < price:
        sink.add(
            (*o.path, "trigger_price"),
            f"a SELL SL triggers at or above its price (trigger {trigger} < price {price})",
        )


def check_relative_stop(doc: Doc, sink: Sink, o: Order) -> None:
    """Market-relative prices on one order: stop direction and SL price/trigger consistency."""
    path, otype = o.path, o.otype
    price, trigger = o.fields.get("price"), o.fields.get("trigger_price")
    side = o.fields["side"]
    if isinstance(trigger, dict) and otype in ("SL", "SL-M"):
        off = parse_offset(trigger["ltp"])
        wrong = off.amount >= 0 if side == "SELL" else off.amount <= 0
        if wrong:
            where = "at or above" if side == "SELL" else "at or below"
            sink.warn(
                (*path, "trigger_price", "ltp"),
                f"a {side} stop triggered {where} the last traded price ({off.label}) fires at once",
                f"a {side} stop sits {'below' if side == 'SELL' else 'above'} the market: "
                f'e.g. {{ltp: "{"-" if side == "SELL" else "+"}1%"}}',
            )
    if otype == "SL" and isinstance(price, dict) and isinstance(trigger, dict):
        p, t = parse_offset(price["ltp"]), parse_offset(trigger["ltp"])
        if p.unit is t.unit or not p.amount or not t.amount:
            if side == "BUY" and t.amount > p.amount:
                sink.add(
                    (*path, "trigger_price"),
                    f"a BUY SL triggers at or below its price (trigger {t.label} > price {p.label})",
                )
            if side == "SELL" and t.amount < p.amount:
                sink.add(
                    (*path, "trigger_price"),
                    f"a SELL SL triggers at or above its price (trigger {t.label} < price {p.label})",
                )
