"""A playbook's instruments against a broker's instrument master: every fixed contract must be listed, and
``lot_size`` / ``tick_size`` / ``freeze_quantity`` written inline must agree with the master (the master
wins at run time, so a disagreement means the playbook's sizes or limits were computed on wrong figures).
Rolling instruments (relative expiry, ATM-relative strike) resolve when the step runs: here only their
underlying must be listed. Used by ``runner validate --accounts`` (when the account's master is a local
file) and by ``runner check``."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from runner.playbook.checks.doc import Doc, Path, instrument_label

if TYPE_CHECKING:
    from runner.brokers.instruments import InstrumentMaster
    from runner.model import Instrument

INLINE_FIELDS = ("lot_size", "tick_size", "freeze_quantity")


class Finding(enum.StrEnum):
    UNKNOWN = "unknown"  # a fixed contract the master does not list
    MISMATCH = "mismatch"  # inline lot/tick/freeze differs from the master
    NO_UNDERLYING = "no_underlying"  # a rolling instrument whose underlying the master does not list
    UNCHECKED = "unchecked"  # written through ${var}: known only at run time


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    finding: Finding
    label: str
    message: str
    hint: str


def instrument_specs(doc: Doc) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every instrument the playbook names: its aliases, then inline specs of orders (each once)."""
    for alias, spec in doc.instruments.items():
        if isinstance(spec, dict):
            yield ("instruments", alias), spec
    for path, fields, _what in doc.orders():
        ref = fields.get("instrument")
        if isinstance(ref, dict):
            yield (*path, "instrument"), ref


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _rolling(spec: dict[str, Any]) -> bool:
    expiry, strike = spec.get("expiry"), spec.get("strike")
    if isinstance(expiry, dict) or isinstance(strike, dict):
        return True
    if isinstance(expiry, str) and not _is_ref(expiry):
        try:
            dt.date.fromisoformat(expiry)
        except ValueError:
            return True
    return isinstance(strike, str) and strike.strip().lower().startswith("atm")


def _instrument(spec: dict[str, Any]) -> Instrument:
    from runner.model import Instrument, OptionType

    expiry = spec.get("expiry")
    strike = spec.get("strike")
    option = spec.get("option_type")
    return Instrument(
        exchange=str(spec["exchange"]).upper(),
        symbol=str(spec["symbol"]).upper(),
        expiry=dt.date.fromisoformat(expiry) if isinstance(expiry, str) else expiry,
        strike=Decimal(str(strike)) if strike is not None else None,
        option_type=OptionType(str(option).upper()) if option else None,
    )


def compare(path: Path, spec: dict[str, Any], master: InstrumentMaster) -> list[Problem]:
    from runner.errors import InstrumentUnknown

    if "exchange" not in spec or "symbol" not in spec:
        return []
    label = instrument_label(spec)
    if any(_is_ref(spec.get(k)) for k in ("exchange", "symbol", "expiry", "strike", "option_type")):
        return [Problem(path, Finding.UNCHECKED, label, f"{label}: written with ${{...}}, not checked here",
                        "it is resolved against the master when the step runs")]
    if _rolling(spec):
        exchange, symbol = str(spec["exchange"]).upper(), str(spec["symbol"]).upper()
        if master.expiries(exchange, symbol):
            return []
        return [Problem(path, Finding.NO_UNDERLYING, label,
                        f"the broker's master lists no contracts of {exchange} {symbol}",
                        "check the symbol and exchange, or sync the master (runner instruments sync)")]
    try:
        row = master.resolve(_instrument(spec))
    except (InstrumentUnknown, ValueError, InvalidOperation, TypeError):
        return [Problem(path, Finding.UNKNOWN, label, f"{label} is not in the broker's instrument master",
                        "check expiry, strike and option type (an expired contract is no longer listed)")]
    out: list[Problem] = []
    for name in INLINE_FIELDS:
        written, listed = spec.get(name), getattr(row.instrument, name)
        if written is None or listed is None or _is_ref(written):
            continue
        try:
            same = Decimal(str(written)) == Decimal(str(listed))
        except InvalidOperation:
            continue
        if not same:
            out.append(Problem((*path, name), Finding.MISMATCH, label,
                               f"{name} {written} disagrees with the broker's master ({listed}) for {label}",
                               f"the master wins: write {name}: {listed}, or remove it"))
    return out


def check_against_master(doc: Doc, master: InstrumentMaster) -> list[Problem]:
    seen: set[Path] = set()
    out: list[Problem] = []
    for path, spec in instrument_specs(doc):
        if path not in seen:
            seen.add(path)
            out.extend(compare(path, spec, master))
    return out
