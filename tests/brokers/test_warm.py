"""Connections opened ahead of a burst (runner.brokers.warm): real loopback server, the client built by
make_client (aiohttp transport). The server notes each request's peer port: a request on a warmed
connection comes from one of the ports the warming opened."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from runner.brokers.http import make_client, send
from runner.brokers.warm import warm, warm_pool


@pytest.fixture
async def server() -> Any:
    ports: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1])
        await asyncio.sleep(0.01)  # concurrent requests overlap: each needs a connection of its own
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/place", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", ports
    await runner.cleanup()


def idle_ports(client: Any) -> set[int]:
    conns = client._transport.client.connector._conns
    return {proto.transport.get_extra_info("sockname")[1] for q in conns.values() for proto, _ in q}


async def test_the_burst_after_warming_opens_no_connection(server: Any) -> None:
    url, ports = server
    client = make_client(url)
    try:
        assert await warm_pool(client, 8, timeout=5) == 8
        warmed = idle_ports(client)
        assert len(warmed) == 8
        assert await warm_pool(client, 8, timeout=5) == 0  # already idle: nothing more opened
        await asyncio.gather(*(send(client, "POST", "/place", broker="t", mutating=True) for _ in range(8)))
        assert len(ports) == 8
        assert set(ports) <= warmed  # every request went out on a warmed connection
    finally:
        await client.aclose()


async def test_warming_in_steps_keeps_every_connection_it_opened(server: Any) -> None:
    """The daemon asks again as each fire of an account is prepared (1, 2, ... sends): taking an idle
    connection to count it must not stand in for opening one (only half the sends found one)."""
    url, _ = server
    client = make_client(url)
    try:
        for sends in range(1, 9):
            await warm_pool(client, sends, timeout=5)
        assert len(idle_ports(client)) == 8
        assert await warm_pool(client, 8, timeout=5) == 0
    finally:
        await client.aclose()


async def test_without_warming_the_burst_connects_at_the_instant(server: Any) -> None:
    url, ports = server
    client = make_client(url)
    try:
        await send(client, "POST", "/place", broker="t", mutating=True)  # one kept-alive connection
        before = idle_ports(client)
        await asyncio.gather(*(send(client, "POST", "/place", broker="t", mutating=True) for _ in range(8)))
        assert len(set(ports[1:]) - before) >= 7  # the mechanism the warming removes
    finally:
        await client.aclose()


class Adapter:
    def __init__(self) -> None:
        self.asked: list[int] = []

    async def warm_connections(self, sends: int) -> None:
        self.asked.append(sends)


class Wrapper:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


async def test_warm_reaches_the_adapter_under_its_wrappers_and_skips_brokers_without_connections() -> None:
    adapter = Adapter()
    await warm(Wrapper(Wrapper(adapter)), 3)
    assert adapter.asked == [3]
    await warm(Wrapper(object()), 3)  # paper: nothing to warm, no error
