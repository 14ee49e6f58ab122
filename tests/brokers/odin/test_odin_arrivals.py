"""The ODIN simulator stamps a place request's arrival when its bytes were read off the socket, not when
its handler's turn came (runner.brokers.sim_front), and serves the stamps at GET /_sim/arrivals keyed by
``order_identifier`` (the id on ODIN's wire)."""

from __future__ import annotations

import aiohttp
import pytest
import time_machine
from helpers.arrival import T0, first_place_holds_the_loop, http_post, send_at_once
from helpers.odin import IDEA, MASTER

from runner.brokers.odin import wire
from runner.brokers.odin.sim import OdinSim
from runner.model import OrderRequest, Side


async def test_a_place_held_back_behind_another_keeps_the_time_it_was_read(
    sim: OdinSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sessions["arrival-test-token"] = ("SIM1", sim.now())  # a session, as a login issues one
    headers = {"x-api-key": sim.x_api_key, "Authorization": "Bearer arrival-test-token"}
    row = MASTER.resolve(IDEA)
    bodies = [wire.place_body(OrderRequest(cid, IDEA, Side.BUY, 1), row) for cid in ("arr-a", "arr-b")]
    places = [http_post(wire.REGULAR_PATH, body, headers) for body in bodies]
    with time_machine.travel(T0, tick=False) as traveller, first_place_holds_the_loop(
        monkeypatch, sim.engine, traveller.shift
    ) as ran:
        replies = await send_at_once(sim.port, places)
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies), replies
    assert ran == [T0, T0 + 5]  # the second handler ran 5 s after both were read
    assert sim.arrivals == {"arr-a": T0, "arr-b": T0}
    async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/_sim/arrivals") as reply:
        assert await reply.json() == {"arr-a": T0, "arr-b": T0}
