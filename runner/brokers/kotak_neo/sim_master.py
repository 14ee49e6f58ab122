"""The Kotak Neo simulator's scrip master: the file-paths endpoint and one CSV per segment, written from
the simulator's own master with the real files' traps (the official header's irregular names, F&O expiry
as 1980-based epoch seconds, strikes and ticks x100), so what a client downloads is what the sim trades.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.master import (
    EPOCH_1980_OFFSET,
    HEADER,
    IST,
    NO_OFFSET_SEGMENTS,
    PATH_MASTER_FILES,
    PATH_MASTER_FILES_LEGACY,
    normalise_header,
)
from runner.brokers.kotak_neo.wire import segment_for, trading_symbol_for
from runner.errors import Rejected

if TYPE_CHECKING:
    from runner.brokers.kotak_neo.sim import KotakNeoSim

FILES_PREFIX = "/wso2-scripmaster/v1/prod"  # as in the docs' sample filesPaths
# The UTC times the real rows' epochs land on once read: shifted NSE_FO 1456410600 -> 2026-02-24 08:30;
# MCX 1778803199 = 2026-05-14 23:59:59 (BSE_FO, not shifted either, is written the same way).
EXPIRY_TIME = dt.time(8, 30)
UNSHIFTED_EXPIRY_TIME = dt.time(23, 59, 59)


def epoch_of(expiry: dt.date, segment: str) -> int:
    """Inverse of :func:`runner.brokers.kotak_neo.master.expiry_of`, in the real files' form."""
    if segment in NO_OFFSET_SEGMENTS:
        return int(dt.datetime.combine(expiry, UNSHIFTED_EXPIRY_TIME, dt.UTC).timestamp())
    return int(dt.datetime.combine(expiry, EXPIRY_TIME, dt.UTC).timestamp()) - EPOCH_1980_OFFSET


def _x100(value: Decimal) -> str:
    return format((value * 100).quantize(Decimal(1)), "f")


def segment_csv(rows: Iterable[MasterRow]) -> bytes:
    """One segment file in the official column order, header spelled as in the sample nse_cm.csv."""
    header = HEADER.split(",")
    index = {normalise_header(h): i for i, h in enumerate(header)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        inst = row.instrument
        seg = segment_for(row)
        rec = [""] * len(header)
        trd = trading_symbol_for(row)
        group = "XX" if inst.expiry else ("EQ" if trd.upper().endswith("-EQ") else "")

        def put(name: str, value: str, rec: list[str] = rec) -> None:
            rec[index[name]] = value

        put("pSymbol", row.token or "")
        put("pGroup", group)
        put("pExchSeg", seg)
        put("pSymbolName", inst.symbol)
        put("pTrdSymbol", trd)
        put("pScripRefKey", trd)
        put("pDesc", inst.symbol)
        put("pExchange", seg.split("_", 1)[0].upper())
        put("dTickSize", _x100(inst.tick_size or Decimal("0.05")))
        put("lPrecision", "2")
        put("dPriceNum", "1")
        put("lLotSize", str(inst.lot_size or 1))
        put("iLotSize", str(inst.lot_size or 1))
        put("iBoardLotQty", str(inst.lot_size or 1))
        put("lFreezeQty", str(inst.freeze_quantity or 0))
        put("lMultiplier", format(inst.price_multiplier, "f") if inst.price_multiplier is not None else "-1")
        if inst.expiry is not None:
            epoch = str(epoch_of(inst.expiry, seg))
            put("lExpiryDate", epoch)
            put("pExpiryDate", epoch)
            put("pInstType", "OPTIDX" if inst.option_type else "FUTIDX")
            put("pOptionType", inst.option_type.value if inst.option_type else "XX")
            put("dStrikePrice", _x100(inst.strike) if inst.strike is not None else "-1")
        else:
            put("lExpiryDate", "-1")
            put("dStrikePrice", "-1")
        writer.writerow(rec)
    return out.getvalue().encode()


def segment_files(master: InstrumentMaster) -> dict[str, bytes]:
    """``{"nse_fo.csv": bytes, ...}`` for every segment the master lists."""
    by_segment: dict[str, list[MasterRow]] = {}
    for row in master:
        try:
            by_segment.setdefault(segment_for(row), []).append(row)
        except Rejected:
            continue  # an exchange Kotak has no segment for is not in Kotak's files either
    return {f"{seg}.csv": segment_csv(rows) for seg, rows in sorted(by_segment.items())}


def add_master_routes(sim: KotakNeoSim) -> None:
    """Serve the file-paths endpoint (current and older path) and the files it lists."""
    files_cache: dict[str, bytes] = {}

    def files() -> dict[str, bytes]:
        if not files_cache:
            from runner.brokers.kotak_neo.sim import default_master

            files_cache.update(segment_files(sim.master or default_master()))
        return files_cache

    async def file_paths(request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        known = {u.access_token for u in sim.users.values() if u.access_token}
        if not token or (known and token not in known):
            return web.json_response({"stCode": 401, "errMsg": "Invalid Credentials"}, status=401)
        day = sim.clock.now().astimezone(IST).date().isoformat()
        folder = f"{sim.url}{FILES_PREFIX}"
        paths = [f"{folder}/{day}/transformed/{name}" for name in files()]
        return web.json_response({"data": {"filesPaths": paths, "baseFolder": folder}})

    async def one_file(request: web.Request) -> web.StreamResponse:
        body = files().get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="text/csv")

    r = sim.app.router
    r.add_get(PATH_MASTER_FILES, file_paths)
    r.add_get(PATH_MASTER_FILES_LEGACY, file_paths)
    r.add_get(FILES_PREFIX + "/{day}/transformed/{name}", one_file)
