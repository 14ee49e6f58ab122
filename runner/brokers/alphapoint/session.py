"""AlphaPoint APEX session: one WebSocket per account, request/reply matching by ``i``, events fanned out.

Frames are built and read by :mod:`runner.brokers.alphapoint.wire`; this module does the socket I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from runner.brokers.alphapoint.wire import BROKER, Frame, MessageType, check_reply, encode_frame
from runner.errors import OutcomeUnknown, Unavailable

log = logging.getLogger("runner.brokers.alphapoint")  # stable name, not __name__: people filter on it


class _ConnectionLost(Exception):
    pass


EventHandler = Callable[[str, Any], None]


class ApexSession:
    """A WebSocket with JSON-RPC request/reply matching. Reconnects (and re-authenticates through
    ``on_open``) lazily on the next call after the socket dropped."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        on_open: Callable[[ApexSession], Awaitable[None]],
        on_event: EventHandler,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._on_open = on_open
        self._on_event = on_event
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._seq = 0  # APEX.js: starts at 0, += 2 (even numbers)
        self._lock = asyncio.Lock()
        self.connects = 0  # how many sockets we opened (tests, journal)

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 2
        return seq

    async def ensure_open(self) -> None:
        if self.is_open:
            return
        async with self._lock:
            if self.is_open:
                return
            await self._drop()
            try:
                ws = await asyncio.wait_for(
                    connect(self.url, open_timeout=self.timeout, max_size=2**24, compression=None),
                    self.timeout,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                raise Unavailable(
                    f"cannot connect to {self.url}: {type(exc).__name__}", broker=BROKER
                ) from exc
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            self.connects += 1
            try:
                await self._on_open(self)
            except BaseException:
                await self._drop()
                raise

    async def reauthenticate(self) -> None:
        """Log in afresh: on the open socket (calls in flight on it go on undisturbed), else on a new
        one. A failed re-login drops the socket, so the next call reconnects and logs in."""
        if not self.is_open:
            await self.ensure_open()
            return
        async with self._lock:
            try:
                await self._on_open(self)
            except BaseException:
                await self._drop()
                raise

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    frame = Frame.parse(raw)
                except (ValueError, TypeError):
                    log.warning("alphapoint: unparseable frame dropped")
                    continue
                if frame.m in (MessageType.REPLY, MessageType.ERROR):
                    fut = self._pending.pop(frame.i, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    # A subscribe call's reply is m=1 too; anything unmatched is a late reply: ignore.
                elif frame.m == MessageType.EVENT:
                    try:
                        self._on_event(frame.n, frame.o)
                    except Exception:  # an event handler bug must not kill the reader
                        log.exception("alphapoint: event handler failed for %s", frame.n)
        except ConnectionClosed:
            pass
        finally:
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(_ConnectionLost())

    async def _drop(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def close(self) -> None:
        await self._drop()

    async def call_raw(
        self, name: str, payload: Any, *, mutating: bool, m: int = MessageType.REQUEST
    ) -> Frame:
        """Send one frame on the current socket and wait for its reply (no reconnect here)."""
        ws = self._ws
        if ws is None or not self.is_open:
            raise Unavailable(f"{name}: not connected", broker=BROKER)
        seq = self._next_seq()
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            await ws.send(encode_frame(m, seq, name, payload))
        except ConnectionClosed as exc:
            # websockets refuses to write on a closed connection: the frame never left.
            self._pending.pop(seq, None)
            raise Unavailable(f"{name}: connection closed before sending", broker=BROKER) from exc
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except (TimeoutError, _ConnectionLost) as exc:
            self._pending.pop(seq, None)
            what = "no reply" if isinstance(exc, TimeoutError) else "connection lost"
            if isinstance(exc, TimeoutError):
                await self._drop()  # a silent socket is not trusted again; reconnect next time
            message = f"{name}: {what} after sending"
            if mutating:
                raise OutcomeUnknown(message, broker=BROKER) from None
            raise Unavailable(message, broker=BROKER) from None

    async def call(self, name: str, payload: Any, *, mutating: bool) -> Any:
        await self.ensure_open()
        frame = await self.call_raw(name, payload, mutating=mutating)
        return check_reply(name, frame)
