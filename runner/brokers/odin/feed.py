"""ODIN market feed client (WebSocket): the I/O around the feed codec in :mod:`runner.brokers.odin.feed_wire`;
:class:`runner.brokers.odin.client.OdinBroker` reads its quotes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runner.brokers.odin import feed_wire
from runner.brokers.odin.wire import BROKER
from runner.clock import Clock
from runner.errors import Unavailable

if TYPE_CHECKING:
    import aiohttp

    from runner.brokers.ratelimit import RateLimiter

log = logging.getLogger("runner.brokers.odin")  # stable name, not __name__: people filter on it


class OdinFeed:
    """The ODIN market feed (WebSocket; codec in :mod:`runner.brokers.odin.feed_wire`): connects and logs
    in on first use, subscribes touchlines as instruments are asked for, keeps the last tick per feed token
    with its time. A dropped connection is reopened (and every touchline subscribed again) on the next read;
    the ticks already held stay, with their own times, for consumers to judge by age."""

    def __init__(self, url: str, *, user_id: Callable[[], str], api_key: Callable[[], str], clock: Clock,
                 limiter: RateLimiter, limit_key: Any, first_tick_seconds: float, timeout: float) -> None:
        self.url = url
        self._user_id = user_id
        self._api_key = api_key
        self.clock = clock
        self.limiter = limiter
        self.limit_key = limit_key
        self.first_tick_seconds = first_tick_seconds
        self.timeout = timeout
        self.ticks: dict[str, tuple[feed_wire.Tick, dt.datetime]] = {}  # token -> (last tick, received at)
        self.subscribed: dict[str, float] = {}  # token -> loop time of its subscription
        self.connects = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tick = asyncio.Condition()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and self._reader is not None \
            and not self._reader.done()

    async def _connect(self) -> None:
        import aiohttp

        await self._drop()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                                 connect=self.timeout))
        try:
            self._ws = await self._session.ws_connect(self.url, heartbeat=30.0, max_msg_size=0)
            await self._send(feed_wire.feed_login(self._user_id(), self._api_key(), self.clock.now()))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await self._drop()
            raise Unavailable(f"market feed {self.url}: {exc or type(exc).__name__}", broker=BROKER) from exc
        self.connects += 1
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _send(self, text: str) -> None:
        assert self._ws is not None
        await self.limiter.acquire(self.limit_key)
        await self._ws.send_bytes(feed_wire.encode_request(text))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import aiohttp

        decoder = feed_wire.FeedDecoder()
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                ticks = [t for t in map(feed_wire.parse_tick, decoder.feed(msg.data)) if t is not None]
                if not ticks:
                    continue
                now = self.clock.now()
                for t in ticks:
                    self.ticks[t.token] = (t, now)
                async with self._tick:
                    self._tick.notify_all()
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("odin: market feed lost: %s", exc)
        finally:
            log.info("odin: market feed closed (%s)", ws.close_code)
            with contextlib.suppress(RuntimeError):  # wake waiters: no first tick will come on this socket
                async with self._tick:
                    self._tick.notify_all()

    async def _drop(self) -> None:
        reader, ws = self._reader, self._ws
        self._reader = self._ws = None
        if ws is not None and not ws.closed:
            await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def subscribe(self, tokens: Sequence[str]) -> None:
        async with self._lock:
            if not self.connected:
                again = list(self.subscribed)
                self.subscribed.clear()
                await self._connect()
                tokens = list(dict.fromkeys([*again, *tokens]))
            new = [t for t in dict.fromkeys(tokens) if t not in self.subscribed]
            loop = asyncio.get_running_loop()
            for i in range(0, len(new), 50):  # batch size unverified: the client sends any number
                batch = new[i:i + 50]
                try:
                    await self._send(feed_wire.touchline_request(batch, self.clock.now()))
                except (ConnectionError, RuntimeError) as exc:
                    await self._drop()
                    raise Unavailable(f"market feed {self.url}: {exc}", broker=BROKER) from exc
                for t in batch:
                    self.subscribed[t] = loop.time()

    async def wait_first(self, tokens: Sequence[str]) -> None:
        """Wait (bounded by first_tick_seconds from each subscription) for a first tick of ``tokens``."""
        loop = asyncio.get_running_loop()
        pending = [t for t in tokens if t not in self.ticks and t in self.subscribed]
        if not pending:
            return
        deadline = max(self.subscribed[t] for t in pending) + self.first_tick_seconds
        async with self._tick:
            while True:
                pending = [t for t in pending if t not in self.ticks
                           and self.subscribed.get(t, deadline) + self.first_tick_seconds > loop.time()]
                left = deadline - loop.time()
                if not pending or left <= 0 or not self.connected:
                    return
                try:
                    await asyncio.wait_for(self._tick.wait(), left)
                except TimeoutError:
                    return

    async def close(self) -> None:
        await self._drop()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
