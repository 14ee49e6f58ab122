"""A simulator's arrival stamp is when a request was read off its socket, not when its handler's turn
came on the simulator's loop (runner.brokers.sim_arrival)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import time_machine
from aiohttp import web

from runner.brokers.sim_arrival import ArrivalClock

T0 = 1_790_000_000.0


async def test_a_request_queued_behind_a_slow_handler_keeps_the_time_it_was_read() -> None:
    clock = ArrivalClock()
    seen: list[tuple[float, float]] = []  # (read_at, time.time() when its handler started)
    with time_machine.travel(T0, tick=False) as traveller:

        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append((clock.read_at(request), time.time()))
            if len(seen) == 1:
                traveller.shift(5)  # the first handler holds the loop for 5 s (played by the clock)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server = await clock.serve(runner, "127.0.0.1", 0, backlog=16)
        port = server.sockets[0].getsockname()[1]
        socks = []
        try:
            # both requests sit in the kernel before the simulator's loop runs again: it reads both in
            # one pass, then runs their handlers one after the other
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                s.setblocking(False)
                socks.append(s)
            loop = asyncio.get_running_loop()
            replies = await asyncio.gather(*(loop.sock_recv(s, 1024) for s in socks))
        finally:
            for s in socks:
                s.close()
            server.close()
            await runner.cleanup()
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies)
    assert [read for read, _ in seen] == [T0, T0]  # both were read before the slow handler ran
    assert seen[1][1] == T0 + 5  # the second handler's own turn came 5 s later: not its arrival


async def test_a_request_not_served_through_the_clock_is_stamped_now() -> None:
    class _Request:
        protocol: Any = object()

    with time_machine.travel(T0, tick=False):
        assert ArrivalClock().read_at(_Request()) == T0  # type: ignore[arg-type]
