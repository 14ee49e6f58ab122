"""The front end every HTTP wire simulator serves through, so what the benches call "arrival at the
broker" measures the runner, not queueing inside the simulator (issue 16):

* each request stamped when its bytes were read off the socket (:class:`~runner.brokers.sim_arrival.
  ArrivalClock`), kept on the request under :data:`ARRIVED`;
* one handler started per turn of the event loop (:class:`~runner.brokers.sim_loop.Turnstile`), so the
  loop reads the sockets between two handlers during a burst;
* a deep accept queue (daemons open a connection per fire due at an instant);
* ``GET /_sim/arrivals`` (the simulator's own, no broker's): client id -> when its first place request
  was read, for bench/lateness.py and bench/scaleout.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from runner.brokers.sim_arrival import ArrivalClock
from runner.brokers.sim_loop import Turnstile

PATH_ARRIVALS = "/_sim/arrivals"
ARRIVED = web.RequestKey("runner_arrived", float)  # when it was read off the socket (wall time)
# aiohttp's 128 overflowed with 3 daemons x 100 fires, and a dropped SYN is retried after 1 s
BACKLOG = 4096


class SimFront:
    """One simulator's arrival stamps, turnstile and listener. Its simulator calls :meth:`admit` first
    thing in its first middleware (or installs :meth:`middleware`), :meth:`note` where a place request
    names its client id, and serves with :meth:`start` / :meth:`stop`."""

    def __init__(self) -> None:
        self.clock = ArrivalClock()
        self.turns = Turnstile()
        # client id -> wall time (epoch s) its first place request was read off the socket
        self.arrivals: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    async def admit(self, request: web.Request) -> None:
        request[ARRIVED] = self.clock.read_at(request)
        await self.turns.turn()  # the loop polls between two handlers: arrivals are read as they come

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await self.admit(request)
        response: web.StreamResponse = await handler(request)
        return response

    def note(self, client_id: str, request: web.Request) -> None:
        """``client_id``'s place request is ``request``: the first one's read time is its arrival."""
        self.arrivals.setdefault(client_id, request.get(ARRIVED) or time.time())

    def add_route(self, app: web.Application) -> None:
        """``GET /_sim/arrivals``; ahead of a catch-all route, add it first."""
        app.router.add_get(PATH_ARRIVALS, self._arrivals)

    async def _arrivals(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.arrivals)

    async def start(self, runner: web.AppRunner, host: str, port: int) -> int:
        """Set ``runner`` up and listen on ``host``:``port``; the port bound."""
        self._runner = runner
        await runner.setup()
        self._listener = await self.clock.serve(runner, host, port, backlog=BACKLOG)
        bound: int = self._listener.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; runner.cleanup() closes the open ones
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
