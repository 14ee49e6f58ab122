"""Exact JSON for broker wire bodies: Decimals go out as JSON numbers written digit for digit and come
back as Decimals, never through float. Shared by every REST/WebSocket adapter and simulator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from runner.errors import Malformed

# Placeholders brokers use for "no value" in numeric fields.
_EMPTY = frozenset({"", "--", "NA", "N/A", "null", "None"})


class _NotPlain(TypeError):
    pass


def _refuse(obj: Any) -> Any:
    raise _NotPlain


# Compact, like dumps below; anything json cannot write natively (a Decimal, a non-dict Mapping) refuses.
_plain = json.JSONEncoder(separators=(",", ":"), default=_refuse).encode


def dumps(obj: Any) -> str:
    """JSON text with Decimals as exact numbers (``Decimal("120.50")`` -> ``120.50``)."""
    try:  # a body without Decimals (most are: strings and ints) in one pass of the C encoder
        return _plain(obj)
    except _NotPlain:
        return _exact(obj)


def _exact(obj: Any) -> str:
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, Mapping):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _exact(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_exact(v) for v in obj) + "]"
    return json.dumps(obj)


# one decoder for every call: json.loads(text, parse_float=...) builds a new one each time
_decode = json.JSONDecoder(parse_float=Decimal).decode


def loads(text: str | bytes) -> Any:
    """JSON with every non-integer number parsed as Decimal."""
    if isinstance(text, bytes | bytearray):  # as json.loads does: UTF-8/16/32, by the leading bytes
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _decode(text)


def to_decimal(value: Any) -> Decimal | None:
    """A broker's number (JSON number, numeric string, placeholder) as Decimal; None when absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        got = value
    else:
        text = str(value).strip()
        if text in _EMPTY:
            return None
        try:
            got = Decimal(text)
        except (InvalidOperation, ValueError):
            return None
    # "NaN" / "Infinity" are no price: None, never a value that poisons comparisons and sums downstream
    return got if got.is_finite() else None


_MAX_DIGITS = 18  # no quantity, id or count of ours is longer; "1e999999999" must not build a huge int


def to_int(value: Any, field: str, *, default: int | None = None, broker: str | None = None) -> int:
    """A broker's whole number, exactly, or :class:`~runner.errors.Malformed` naming ``field``.

    Liberal in what it accepts: ``10``, ``"10"``, ``"10.0"``, ``" 10 "``, ``Decimal("10.00")``, ``10.0``.
    Absent (None or a placeholder such as ``"--"``) is ``default`` only when the caller passes one: the
    call site says the field is optional and what its absence means. A fraction is never truncated;
    NaN, infinity, text, booleans and other types are refused the same way, whatever the default."""

    def bad(reason: str) -> Malformed:
        return Malformed(field, value, reason=reason, broker=broker)

    if value is None or (isinstance(value, str) and value.strip() in _EMPTY):
        if default is None:
            raise bad("missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise bad("not a number")
    if isinstance(value, int):
        d = Decimal(value)
    else:
        try:
            d = Decimal(value.strip() if isinstance(value, str) else value)  # float: its exact value
        except (InvalidOperation, ValueError):
            raise bad("not a number") from None
    if not d.is_finite():
        raise bad("not a finite number")
    if d.adjusted() >= _MAX_DIGITS:
        raise bad("out of range")
    if d != d.to_integral_value():
        raise bad("not a whole number")
    return int(d)


def plain(value: Decimal) -> str:
    """Shortest exact text: ``2450.50`` -> ``"2450.5"``, ``100`` -> ``"100"`` (as SDK callers send)."""
    return format(value.normalize(), "f")
