"""When a request arrived at a wire simulator: the time its bytes were read off the socket, stamped by a
thin protocol between the event loop's transport and aiohttp's request handler.

aiohttp has no per-request hook at the socket read: its ``request_factory`` and the first middleware run
only when the request's turn on the loop comes, and during a burst of a thousand requests that turn is
hundreds of milliseconds later - queueing inside the simulator, not the runner's lateness. So a simulator
serves its :class:`aiohttp.web.AppRunner`'s protocol factory (``runner.server``, public) through
:func:`serve` and reads :func:`read_at` in its middleware. Every call is forwarded unchanged; only
``data_received`` is timed first.

A connection carries one request at a time (HTTP/1.1 clients do not pipeline): the time stamped is that of
the last read before the handler started, i.e. of the read that completed the request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web


class _Stamping(asyncio.Protocol):
    """Forwards every protocol call to aiohttp's handler, stamping each read (wall time) on the way."""

    def __init__(self, inner: asyncio.Protocol, stamps: dict[object, float]) -> None:
        self._inner = inner
        self._stamps = stamps

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._stamps[self._inner] = time.time()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stamps.pop(self._inner, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ArrivalClock:
    """The read stamps of one simulator's open connections."""

    def __init__(self) -> None:
        self._stamps: dict[object, float] = {}  # aiohttp's handler (one per connection) -> last read

    async def serve(self, runner: web.AppRunner, host: str, port: int, *, backlog: int) -> asyncio.Server:
        """Listen on ``host``:``port`` for ``runner`` (set up already), every connection stamped. The
        caller closes the returned server before ``runner.cleanup()``."""
        server = runner.server
        if server is None:
            raise RuntimeError("the AppRunner is not set up")
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Stamping(server(), self._stamps), host, port,
                                        backlog=backlog)

    def read_at(self, request: web.BaseRequest) -> float:
        """When ``request`` was read off its socket (wall time); now for one not served through here."""
        stamp: Any = self._stamps.get(request.protocol)
        return float(stamp) if stamp is not None else time.time()
