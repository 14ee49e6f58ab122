"""The ODIN simulator's scrip master: ``/scripfiles/v2/{EXCHANGE}.json`` (header row + arrays, strikes and
ticks in paise, expiry dd-mm-yyyy) and the v1 shape at ``/scripfiles/{EXCHANGE}.json``, written from the
simulator's own master so what a client downloads is what the sim trades."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.odin.feed_wire import FEED_SEGMENT_ID
from runner.brokers.odin.wire import odin_exchange, scrip_token
from runner.errors import InstrumentUnknown
from runner.wirejson import dumps

if TYPE_CHECKING:
    from runner.brokers.odin.sim import OdinSim

PREFIX = "/scripfiles"
V2_HEADER = [
    "nMarketSegmentId",
    "nToken",
    "sSymbol",
    "sSeries",
    "sInstrumentName",
    "ExpiryDate",
    "nStrikePrice",
    "sOptionType",
    "nRegularLot",
    "nPriceTick",
    "nFreezeQty",
]


def _paise(value: Decimal | None) -> int:
    return int((value * 100).to_integral_exact()) if value is not None else -1


def _record(row: MasterRow, exchange: str) -> dict[str, Any]:
    inst = row.instrument
    kind = "EQUITIES" if inst.expiry is None else "OPTIDX" if inst.option_type else "FUTIDX"
    return {
        "nMarketSegmentId": int(row.extra.get("market_segment_id") or FEED_SEGMENT_ID.get(exchange, 0)),
        "nToken": scrip_token(row),
        "sSymbol": inst.symbol,
        "sSeries": row.extra.get("series", "EQ") if inst.expiry is None else "",
        "sInstrumentName": kind,
        "ExpiryDate": inst.expiry.strftime("%d-%m-%Y") if inst.expiry else "",
        "nStrikePrice": _paise(inst.strike) if inst.option_type else -1,
        "sOptionType": inst.option_type.value if inst.option_type else ("XX" if inst.expiry else ""),
        "nRegularLot": inst.lot_size or 1,
        "nPriceTick": _paise(inst.tick_size or Decimal("0.05")),
        "nFreezeQty": inst.freeze_quantity or 0,
    }


def by_exchange(rows: Iterable[MasterRow]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        try:
            exchange = odin_exchange(row.instrument, row)
            out.setdefault(exchange, []).append(_record(row, exchange))
        except (InstrumentUnknown, ValueError):
            continue  # no ODIN segment or token: not in ODIN's files either
    return out


def v2_file(records: list[dict[str, Any]]) -> bytes:
    return str(dumps([V2_HEADER] + [[r[h] for h in V2_HEADER] for r in records])).encode()


def v1_file(records: list[dict[str, Any]]) -> bytes:
    v1 = [
        {
            "code": str(r["nToken"]),
            "sym": r["sSymbol"],
            "ser": r["sSeries"],
            "inst": r["sInstrumentName"],
            "expiry": r["ExpiryDate"],
            "strike": r["nStrikePrice"],
            "otype": r["sOptionType"],
            "lot": r["nRegularLot"],
            "seg": r["nMarketSegmentId"],
        }
        for r in records
    ]
    return str(dumps(v1)).encode()


def add_master_routes(sim: OdinSim) -> None:
    cache: dict[str, list[dict[str, Any]]] = {}

    def records(name: str) -> list[dict[str, Any]]:
        if not cache:
            master: InstrumentMaster = sim.master
            cache.update(by_exchange(master))
        exchange = name.removesuffix(".json").upper()
        if exchange not in cache:
            raise web.HTTPForbidden()  # S3 answers 403 AccessDenied for a key it does not hold
        return cache[exchange]

    async def v2(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=v2_file(records(request.match_info["name"])), content_type="application/json"
        )

    async def v1(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=v1_file(records(request.match_info["name"])), content_type="application/json"
        )

    sim.app.router.add_get(PREFIX + "/v2/{name}", v2)
    sim.app.router.add_get(PREFIX + "/{name}", v1)
