"""Connections opened ahead of a burst of sends.

Fires due at one instant send their first requests together; an HTTP client holding one kept-alive
connection per host then opens the rest *at the instant*: 150 TCP connects on the event loop before the
first request body left (~0.8 ms each on this box, measured by bench/lateness.py: +160 ms before any
request left). The daemon knows ahead how many sends of an account are armed for an instant, so the
adapter opens that many idle connections while preparing (:func:`warm`), and the sends reuse them.

Nothing is sent on a warmed connection: it is a TCP (and TLS) handshake only.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

import httpx


@runtime_checkable
class Warmable(Protocol):
    async def warm_connections(self, sends: int) -> None:
        """Have at least ``sends`` connections to the order-entry host open and idle (best effort)."""


async def warm(broker: Any, sends: int) -> None:
    """``broker`` (or the adapter under its forwarding wrappers) opens connections for ``sends``
    concurrent requests; a broker without connections to warm (paper) is left alone."""
    while broker is not None:
        if isinstance(broker, Warmable):
            await broker.warm_connections(sends)
            return
        broker = getattr(broker, "inner", None)


async def warm_pool(client: httpx.AsyncClient, sends: int, timeout: float) -> int:
    """Open idle keep-alive connections to ``client``'s base URL until ``sends`` are idle; the number
    opened. Only the aiohttp transport (:func:`runner.brokers.http.make_client`'s default) pools
    connections this can reach; with any other it does nothing."""
    import aiohttp
    from yarl import URL

    transport: Any = client._transport  # the one transport of a client built by make_client
    if not hasattr(transport, "get_client") or sends <= 0:
        return 0
    session = getattr(transport, "client", None)
    if not isinstance(session, aiohttp.ClientSession):
        session = transport.client = transport.get_client()  # what its first request would create
    connector = session.connector
    if connector is None:
        return 0
    loop = asyncio.get_running_loop()
    req = aiohttp.ClientRequest("GET", URL(str(client.base_url)), loop=loop)
    idle = len(getattr(connector, "_conns", {}).get(req.connection_key, ()))
    limit = connector.limit or sends
    want = min(sends, limit)
    if want <= idle:
        return 0
    wait = aiohttp.ClientTimeout(sock_connect=timeout, connect=timeout)
    # ``connect`` hands out an idle connection before it opens one: all ``want`` are held at once, so
    # the idle ones are taken first and exactly the rest are opened (asking for only the missing number
    # took idle ones back and opened half of what was wanted)
    opening = (connector.connect(req, [], wait) for _ in range(want))
    opened = await asyncio.gather(*opening, return_exceptions=True)
    n = 0
    for conn in opened:
        if isinstance(conn, BaseException):
            continue  # best effort: the send opens its own, as it would have
        conn.release()  # back to the pool, idle: the next request takes it
        n += 1
    return max(0, n - idle)
