"""Exact JSON for broker wire bodies: Decimals go out as JSON numbers written digit for digit and come
back as Decimals, never through float. Shared by every REST/WebSocket adapter and simulator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

# Placeholders brokers use for "no value" in numeric fields.
_EMPTY = frozenset({"", "--", "NA", "N/A", "null", "None"})


def dumps(obj: Any) -> str:
    """JSON text with Decimals as exact numbers (``Decimal("120.50")`` -> ``120.50``)."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, Mapping):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    return json.dumps(obj)


def loads(text: str | bytes) -> Any:
    """JSON with every non-integer number parsed as Decimal."""
    return json.loads(text, parse_float=Decimal)


def to_decimal(value: Any) -> Decimal | None:
    """A broker's number (JSON number, numeric string, placeholder) as Decimal; None when absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    text = str(value).strip()
    if text in _EMPTY:
        return None
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def to_int(value: Any, default: int = 0) -> int:
    d = to_decimal(value)
    return int(d) if d is not None else default


def plain(value: Decimal) -> str:
    """Shortest exact text: ``2450.50`` -> ``"2450.5"``, ``100`` -> ``"100"`` (as SDK callers send)."""
    return format(value.normalize(), "f")
