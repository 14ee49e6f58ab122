"""The Kotak Neo simulator's quotes (market data) replies, apart from its HTTP server
(:mod:`runner.brokers.kotak_neo.sim`): the docs' Quotes rows from the paper price path.
Assumptions where Kotak publishes nothing are marked "sim:".
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from aiohttp import web

from runner.brokers.instruments import MasterRow
from runner.brokers.kotak_neo.quotes_wire import QUOTE_FILTERS, QUOTES_PER_CALL
from runner.brokers.kotak_neo.sim_book import SimUser, WireError
from runner.brokers.kotak_neo.wire import trading_symbol_for
from runner.brokers.paper.matching import MatchingEngine
from runner.clock import Clock


class SimQuotes:
    """Quotes replies over the matching engine's price path (no routing).
    :class:`runner.brokers.kotak_neo.sim.KotakNeoSim` sets these attributes and serves the route."""

    engine: MatchingEngine
    clock: Clock
    users: dict[str, SimUser]
    quote_calls: list[list[str]]
    _by_segment_token: dict[tuple[str, str], MasterRow]

    async def _do_quotes(self, request: web.Request) -> list[dict[str, Any]]:
        """The docs' Quotes reply from the paper price path the matching engine fills at, so a quote and
        a fill of the same second agree. Access token only (plain or "Bearer "), no session."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        known = {u.access_token for u in self.users.values() if u.access_token}
        if not token or (known and token not in known):
            raise WireError(401, "Invalid Credentials", http_status=401)
        quote_type = request.match_info.get("quote_type", "all").lower()
        if quote_type not in QUOTE_FILTERS:
            raise WireError(400, f"invalid filter {quote_type!r}", http_status=400)
        symbols = [s.strip() for s in request.match_info["symbols"].split(",") if s.strip()]
        if not symbols or len(symbols) > QUOTES_PER_CALL:  # sim: Kotak's reply to >50 is undocumented
            raise WireError(400, f"between 1 and {QUOTES_PER_CALL} neosymbols per call", http_status=400)
        self.quote_calls.append(symbols)
        now = self.clock.now()
        rows = []
        for symbol in symbols:
            seg, _, tok = symbol.partition("|")
            row = self._by_segment_token.get((seg.lower(), tok))
            if row is not None:
                rows.append(self._quote_row(row, seg.lower(), quote_type, now))
        if not rows:
            raise WireError(1009, "Invalid neosymbol values")  # docs: stCode 1009 "Invalid instrument/code"
        return rows

    def _quote_row(self, row: MasterRow, seg: str, quote_type: str, now: dt.datetime) -> dict[str, Any]:
        instrument = row.instrument
        ltp = self.engine.last_price(instrument, now)
        tick = instrument.tick_size or Decimal("0.05")
        slip = tick * self.engine.config.slippage_ticks
        # A market buy fills at ltp + slippage, a sell at ltp - slippage (matching rules): the touch.
        bid, ask = max(ltp - slip, tick), ltp + slip
        size = str(instrument.freeze_quantity or (instrument.lot_size or 1) * 100)  # sim: nominal depth
        empty = {"price": "0", "quantity": "0", "orders": "0"}
        out: dict[str, Any] = {"exchange_token": row.token, "display_symbol": trading_symbol_for(row),
                               "exchange": seg, "lstup_time": str(int(now.timestamp()))}
        if quote_type in ("all", "ltp"):
            out["ltp"] = f"{ltp:.4f}"
        if quote_type == "all":
            out.update({"last_traded_quantity": "0", "total_buy": size, "total_sell": size,
                        "last_volume": "0", "change": "0", "per_change": "0", "year_high": "0",
                        "year_low": "0", "ohlc": {"open": f"{ltp:.4f}", "high": f"{ltp:.4f}",
                                                  "low": f"{ltp:.4f}", "close": f"{ltp:.4f}"}})
        if quote_type in ("all", "depth"):
            out["depth"] = {
                "buy": [{"price": f"{bid:.4f}", "quantity": size, "orders": "1"}] + [dict(empty)] * 4,
                "sell": [{"price": f"{ask:.4f}", "quantity": size, "orders": "1"}] + [dict(empty)] * 4,
            }
        return out
