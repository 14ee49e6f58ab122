"""The Blitz simulator's instrument dump: its own master in Blitz's format (docs/blitzsdk/instruments.md
before commit 0d90142), so a download agrees with what the simulator trades."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

from runner.brokers.blitz.master import INSTRUMENTS_PATH
from runner.brokers.blitz.wire import exchange_segment, instrument_id
from runner.brokers.instruments import MasterRow
from runner.wirejson import dumps

__all__ = ["INSTRUMENTS_PATH", "dump_record", "instruments_dump", "is_instruments_path"]


def is_instruments_path(path: str) -> bool:
    """The SDK's path, under any prefix the simulator also answers on (``/md-api``...)."""
    return path.rstrip("/").lower().endswith(INSTRUMENTS_PATH)


def dump_record(row: MasterRow) -> dict[str, Any]:
    inst = row.instrument
    if inst.option_type is not None:
        kind = inst.option_type.value  # the docs' option row: "instrumentType": "CE"
    elif inst.expiry is not None:
        kind = "FUT"
    else:
        kind = row.extra.get("instrument_type", "EQ")
    return {
        "instrumentId": instrument_id(row),
        "exchangeSegment": exchange_segment(row),
        "instrumentName": row.trading_symbol or inst.symbol,
        "instrumentType": kind,
        "lotSize": inst.lot_size or 1,
        "tickSize": inst.tick_size,
        "expiry": inst.expiry.isoformat() if inst.expiry else None,
        "strike": inst.strike,
        "optionType": inst.option_type.value if inst.option_type else None,
    }


def instruments_dump(rows: Iterable[MasterRow]) -> bytes:
    """The gzipped JSON array GET /v1/api/instruments/gz/download serves (numbers exact)."""
    return gzip.compress(dumps([dump_record(r) for r in rows]).encode(), mtime=0)
