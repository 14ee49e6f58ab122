"""The APEX simulator's ``GetInstruments`` / ``GetInstrument``: its own master in the documented shape
(alphapoint/slate ``_api_instrs_user_getinstruments.md``, camelCase keys as there), so a download agrees
with what the simulator trades. Both calls are Public."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from runner.brokers.alphapoint.master import GET_INSTRUMENTS, apex_symbol
from runner.brokers.alphapoint.wire import instrument_id_of
from runner.brokers.instruments import MasterRow

GET_INSTRUMENT = "GetInstrument"
CALLS = frozenset({GET_INSTRUMENTS, GET_INSTRUMENT})
QUOTE_PRODUCT = "INR"  # the simulator's cash product (sim_exchange CASH)
RUNNING = 1
_SESSION_NUMBER = {"Unknown": 0, "Running": 1, "Paused": 2, "Stopped": 3, "Starting": 4}


def instrument_record(row: MasterRow, oms_id: int, index: int, at: dt.datetime) -> dict[str, Any]:
    inst = row.instrument
    iid = instrument_id_of(row)
    product = row.extra.get("product_symbol") or row.trading_symbol or inst.symbol
    status = _SESSION_NUMBER.get(row.extra.get("session_status", ""), RUNNING)
    return {
        "omsId": oms_id,
        "instrumentId": iid,
        "symbol": apex_symbol(inst),
        "product1": 1000 + iid,  # product ids: the simulator's own numbering
        "product1Symbol": product,
        "product2": 1,
        "product2Symbol": row.extra.get("quote_product", QUOTE_PRODUCT),
        "instrumentType": 1,  # Standard
        "venueInstrumentId": iid,
        "venueId": 1,
        "sortIndex": index,
        "sessionStatus": status,
        "previousSessionStatus": status,
        "sessionStatusDateTime": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "selfTradePrevention": True,
        "quantityIncrement": Decimal(inst.lot_size or 1),
        "priceIncrement": inst.tick_size or Decimal("0.05"),
        "priceCollarIndexDifference": Decimal("0.0"),
        "priceCollarConvertToOtcEnabled": False,
        "priceCollarConvertToOtcClientUserId": 1,
        "priceCollarConvertToOtcAccountId": 0,
        "priceCollarConvertToOtcThreshold": Decimal("0.0"),
        "otcConvertSizeEnabled": False,
        "otcConvertSizeThreshold": Decimal("0.0"),
    }


def reply(
    name: str, rows: Iterable[MasterRow], body: Mapping[str, Any], at: dt.datetime
) -> list[dict[str, Any]] | dict[str, Any] | None:
    """``GetInstruments`` (every instrument of ``OMSId``) or ``GetInstrument`` (one, by ``InstrumentId``;
    None when unknown: the caller answers "Resource Not Found"). ``body`` has lower-cased keys."""
    oms = int(body.get("omsid") or 1)
    records = [instrument_record(r, oms, i, at) for i, r in enumerate(rows)]
    if name == GET_INSTRUMENTS:
        return records
    wanted = int(body.get("instrumentid") or 0)
    return next((r for r in records if r["instrumentId"] == wanted), None)
