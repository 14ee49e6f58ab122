"""Market-relative prices: ``{ltp: "-1%"}``, ``{ltp: "+1.50"}``, ``{ltp: "-3 ticks"}``, ``{ltp: 0}``.

Pure and pydantic-free: the validator (cold start matters), the model, the steps and the planner share
it. An offset is resolved once, when its step runs, against the broker's last traded price, in exact
Decimal arithmetic, then snapped to the tick on the side that does not make the order more aggressive.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # runner.model is not needed at run time: `runner validate` starts without it
    from runner.model import Side

DEFAULT_TICK = Decimal("0.05")

# "0", or a sign then: a percentage of LTP, a whole number of ticks, or rupees.
OFFSET_PATTERN = r"^(?:0|[+-](?:\d+(?:\.\d+)?%|\d+ ?ticks?|\d+(?:\.\d+)?))$"
_OFFSET_RE = re.compile(OFFSET_PATTERN)
_LOOSE_RE = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s].*?)?\s*$")


class Unit(enum.StrEnum):
    PERCENT = "%"
    TICKS = "ticks"
    RUPEES = ""


class PriceRole(enum.StrEnum):
    """Which way a resolved price is snapped: a limit towards the passive side, a trigger away from
    the market (a BUY stop sits above it, a SELL stop below)."""

    LIMIT = "limit"
    TRIGGER = "trigger"


class NoReferencePrice(ValueError):
    """No last traded price is available, so a relative price cannot be resolved."""


@dataclass(frozen=True, slots=True)
class Offset:
    amount: Decimal  # signed
    unit: Unit

    def __str__(self) -> str:
        if not self.amount:
            return "0"
        sign = "+" if self.amount > 0 else "-"
        size = format(abs(self.amount), "f")
        if self.unit is Unit.TICKS:
            return f"{sign}{size} tick{'s' if abs(self.amount) != 1 else ''}"
        return f"{sign}{size}{self.unit.value}"

    @property
    def label(self) -> str:
        """As shown in plans: ``LTP -1%``; ``LTP`` alone for a zero offset."""
        return "LTP" if not self.amount else f"LTP {self}"

    def apply(self, ltp: Decimal, tick: Decimal) -> Decimal:
        """The raw (unsnapped) price, exact."""
        if self.unit is Unit.PERCENT:
            return ltp + ltp * self.amount / Decimal(100)
        if self.unit is Unit.TICKS:
            return ltp + self.amount * tick
        return ltp + self.amount


def parse_offset(text: str | int) -> Offset:
    """``"+2%"``, ``"-0.5%"``, ``"+1.50"``, ``"-3 ticks"``, ``"0"`` (or the integer 0)."""
    if text == 0 and not isinstance(text, bool):
        return Offset(Decimal(0), Unit.RUPEES)
    if not isinstance(text, str) or not _OFFSET_RE.match(text):
        raise ValueError(f"invalid ltp offset {text!r}: {offset_hint(text)}")
    if text == "0":
        return Offset(Decimal(0), Unit.RUPEES)
    sign = -1 if text[0] == "-" else 1
    body = text[1:]
    if body.endswith("%"):
        return Offset(sign * Decimal(body[:-1]), Unit.PERCENT)
    if ticks := re.fullmatch(r"(\d+) ?ticks?", body):
        return Offset(sign * Decimal(ticks[1]), Unit.TICKS)
    return Offset(sign * Decimal(body), Unit.RUPEES)


def offset_hint(value: object) -> str:
    """What to write instead of a bad offset."""
    examples = 'e.g. "-1%", "+0.5%", "+1.50" (rupees), "-3 ticks" or 0'
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | Decimal | float):
        return f"write the offset from the last traded price as a quoted string, {examples}"
    if not isinstance(value, str):
        size = format(abs(Decimal(str(value))), "f")
        return f'quote it with its sign: "+{size}" or "-{size}" (rupees from LTP)'
    m = _LOOSE_RE.match(value)
    if m is None:
        return f"an offset is a sign, a number and a unit (%, ticks, or none for rupees): {examples}"
    sign, number, unit = m[1], m[2], (m[3] or "").strip()
    unit_word = unit.lower()
    if unit_word in ("%", "pct", "percent"):
        unit_text = "%"
    elif unit_word in ("tick", "ticks", "t"):
        unit_text = " ticks"
    elif unit_word in ("", "rs", "inr", "rupees", "₹"):
        unit_text = ""
    else:
        return f"unknown unit {unit!r}: use % (of LTP), ticks, or no unit for rupees, {examples}"
    if unit_text == " ticks" and "." in number:
        return 'ticks are whole numbers, e.g. "-3 ticks"; use rupees or % for finer offsets'
    if not sign:
        return f'write "+{number}{unit_text}" or "-{number}{unit_text}": the sign says which way from LTP'
    return f'write "{sign}{number}{unit_text}" ({examples})'


def snap_to_tick(price: Decimal, tick: Decimal, side: Side, role: PriceRole) -> Decimal:
    """Limit: BUY rounds down, SELL up (never more aggressive). Trigger: BUY up, SELL down (away from
    the market, so rounding never makes a stop fire sooner)."""
    down = (side.sign > 0) == (role is PriceRole.LIMIT)  # BUY has sign +1
    mode = ROUND_FLOOR if down else ROUND_CEILING
    return (price / tick).to_integral_value(rounding=mode) * tick


def resolve(
    offset: Offset, ltp: Decimal | None, *, tick: Decimal | None, side: Side, role: PriceRole, what: str
) -> Decimal:
    """The absolute price for ``offset`` now. Raises NoReferencePrice / ValueError (result not > 0)."""
    if ltp is None:
        raise NoReferencePrice(f"{what}: no last traded price available to resolve {offset.label}")
    t = tick or DEFAULT_TICK
    price = snap_to_tick(offset.apply(ltp, t), t, side, role)
    if price <= 0:
        raise ValueError(f"{what}: {offset.label} of {ltp} gives {price}; a price must be above zero")
    return price
