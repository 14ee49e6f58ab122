"""The Blitz simulator stamps a place request's arrival when its bytes were read off the socket, not when
its handler's turn came (runner.brokers.sim_front), and serves the stamps at GET /_sim/arrivals."""

from __future__ import annotations

import aiohttp
import pytest
import time_machine
from helpers.arrival import T0, first_place_holds_the_loop, http_post, send_at_once
from helpers.blitz import IDEA

from runner.brokers.blitz import wire
from runner.brokers.blitz.sim import Running
from runner.model import OrderRequest, Side


async def _token(running: Running) -> str:
    async with aiohttp.ClientSession() as http, http.post(
        f"{running.auth_url}/api/app_login", json={"appKey": "k", "userId": "SIM1"}
    ) as reply:
        body = await reply.json()
    token: str = body["data"]["accessToken"]
    return token


async def test_a_place_held_back_behind_another_keeps_the_time_it_was_read(
    sim: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"Authorization": f"Bearer {await _token(sim)}"}
    row = sim.sim.master.resolve(IDEA)
    path = f"/api_interactive/api/v1/{wire.SDK_PATHS.place}"
    places = [http_post(path, wire.place_body(OrderRequest(cid, IDEA, Side.BUY, 1), row, "SIM1"), headers)
              for cid in ("arr-a", "arr-b")]
    with time_machine.travel(T0, tick=False) as traveller, first_place_holds_the_loop(
        monkeypatch, sim.sim.engine, traveller.shift
    ) as ran:
        replies = await send_at_once(sim.port, places)
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies), replies
    assert ran == [T0, T0 + 5]  # the second handler ran 5 s after both were read
    assert sim.sim.arrivals == {"arr-a": T0, "arr-b": T0}
    async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/_sim/arrivals") as reply:
        assert await reply.json() == {"arr-a": T0, "arr-b": T0}
