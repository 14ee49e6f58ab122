"""The JSON of a broker call's request and response, as the journal's ``broker_calls`` rows keep it:
secrets redacted, keys sorted, and fast for the order records nearly every call carries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from decimal import Decimal
from typing import Any

from runner.logs import redact
from runner.model import Instrument, Order, OrderRequest

_ENCODER = json.JSONEncoder(default=str, sort_keys=True)  # json.dumps(**kw) builds one per call
_FLAT_ENCODER = json.JSONEncoder(default=str)  # for dicts built in key order already
_AS_IS: frozenset[type] = frozenset({type(None), int, bool})
_AS_TEXT: frozenset[type] = frozenset({Decimal, dt.datetime, dt.date})  # as ``default=str`` would


def _json(value: Any) -> str:
    """JSON of a broker call's request or response, secrets redacted, keys sorted."""
    if isinstance(value, Order | OrderRequest):
        return _record_json(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, Order | OrderRequest) for v in value):
        return "[" + ", ".join(_record_json(v) for v in value) + "]"
    return _ENCODER.encode(redact(value))


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _record_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field, is-secret) in sorted order; the secret check is :func:`runner.logs.redact`'s own."""
    found = _FIELDS.get(cls)
    if found is None:
        names = sorted(f.name for f in dataclasses.fields(cls))
        found = _FIELDS[cls] = tuple((n, redact({n: ""})[n] != "") for n in names)
    return found


def _record_json(obj: Order | OrderRequest) -> str:
    """``_ENCODER.encode(redact(_flat(obj)))`` without the generic walk: the same text, ~3x faster (an
    order's fields are fixed; only their string values can carry a token, and those still go through
    :func:`redact`)."""
    out: dict[str, Any] = {}
    for name, secret in _record_fields(type(obj)):
        v = getattr(obj, name)
        t = type(v)
        if secret and v is not None:
            v = "***"
        elif t in _AS_IS:
            pass
        elif t is str:
            v = redact(v)
        elif t in _AS_TEXT:
            v = str(v)
        elif isinstance(v, Instrument):
            v = redact(v.key)
        elif not isinstance(v, enum.StrEnum):  # enum members are code constants, encoded as their value
            v = redact(v)
        out[name] = v
    return _FLAT_ENCODER.encode(out)


def _flat(obj: Any) -> dict[str, Any]:
    """Shallow field dict (dataclasses.asdict deep-copies: too slow for every broker call)."""
    d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    d["instrument"] = obj.instrument.key
    return d


def order_to_dict(order: Order) -> dict[str, Any]:
    return _flat(order)


def request_to_dict(request: OrderRequest) -> dict[str, Any]:
    return _flat(request)
