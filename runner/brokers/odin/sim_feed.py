"""The ODIN simulator's market feed (WebSocket at the root of its port), apart from its REST routes
(:mod:`runner.brokers.odin.sim`): feed login, touchline subscriptions and native touchline ticks from
the paper price path, in the codec of :mod:`runner.brokers.odin.feed_wire`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from aiohttp import WSMsgType, web

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.odin import feed_wire
from runner.brokers.odin.sim_book import SimAccount
from runner.brokers.paper.matching import MatchingEngine
from runner.errors import BrokerError


class SimFeed:
    """The feed side of :class:`runner.brokers.odin.sim.OdinSim`, which sets these attributes and routes
    ``GET /`` to :meth:`_feed`."""

    master: InstrumentMaster
    engine: MatchingEngine
    accounts: dict[str, SimAccount]
    feed_interval: float
    feed_requests: list[str]
    feed_sockets: list[web.WebSocketResponse]
    _feed_rows: dict[str, MasterRow] | None
    now: Callable[[], dt.datetime]

    # -- market feed ------------------------------------------------------------------------------------

    def feed_row(self, token: str) -> MasterRow | None:
        """The master row of a feed token ``"{segment}_{token}"`` (None: the feed knows no such scrip)."""
        if self._feed_rows is None:
            rows: dict[str, MasterRow] = {}
            for row in self.master:
                try:
                    rows[feed_wire.feed_token(row)] = row
                except (BrokerError, ValueError):
                    continue
            self._feed_rows = rows
        return self._feed_rows.get(token)

    def touchline(self, token: str, row: MasterRow) -> bytes:
        """A native touchline (``49=1``) from the paper price path at the sim's now: the price the
        matching engine fills at. The paper path has one price, at which a limit order on either side
        is marketable, so best bid = best ask = LTP here."""
        now = self.now()
        price = self.engine.last_price(row.instrument, now)
        locator = 100 if (price * 100) == (price * 100).to_integral_value() else 10_000_000
        raw = int(price * locator)
        seg, tok = (int(x) for x in token.split("_"))
        return feed_wire.encode_tick(seg, tok, ltp=raw, bid=raw, ask=raw, bid_qty=1, ask_qty=1,
                                     locator=locator, lut=now, ltt=now, at=now)

    async def drop_feeds(self) -> None:
        """Close every feed connection (a feed outage; the adapter reconnects on its next read)."""
        for ws in list(self.feed_sockets):
            await ws.close()

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.feed_sockets.append(ws)
        decoder = feed_wire.FeedDecoder(inner=False)
        subscribed: dict[str, MasterRow] = {}
        user: str | None = None

        async def push() -> None:
            while not ws.closed:
                await asyncio.sleep(self.feed_interval)
                if subscribed and not ws.closed:
                    await ws.send_bytes(feed_wire.encode_messages(
                        [self.touchline(t, r) for t, r in list(subscribed.items())]))

        pusher = asyncio.create_task(push())
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.BINARY:
                    continue
                for body in decoder.feed(msg.data):
                    text = body.decode("ascii", errors="replace")
                    self.feed_requests.append(text)
                    fields, tokens = feed_wire.parse_request(text)
                    code = fields.get("64")
                    if code == str(feed_wire.FEED_LOGIN):
                        acct = self.accounts.get(fields.get("67", ""))
                        if acct is None or fields.get("68") != acct.user.api_key:
                            await ws.close(code=4001, message=b"login refused")  # unverified: real reply
                            return ws
                        user = acct.user.user_id
                    elif code in (str(feed_wire.FEED_TOUCHLINE), str(feed_wire.FEED_LTP_TOUCHLINE)) and user:
                        if fields.get("230") == "2":
                            for t in tokens:
                                subscribed.pop(t, None)
                            continue
                        fresh = []
                        for t in tokens:
                            row = self.feed_row(t)
                            if row is not None and t not in subscribed:
                                subscribed[t] = row
                                fresh.append(self.touchline(t, row))
                        if fresh:  # a snapshot at once, then every feed_interval
                            await ws.send_bytes(feed_wire.encode_messages(fresh))
        finally:
            pusher.cancel()
            self.feed_sockets.remove(ws)
        return ws
