"""The AlphaPoint simulator stamps a SendOrder frame's arrival when the read that completed it came off the
socket, not when its connection's handler got to it (runner.brokers.sim_ws_arrival)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import time_machine
from helpers.arrival import T0, first_place_holds_the_loop
from websockets.frames import Frame, Opcode

from runner.brokers.alphapoint import wire
from runner.brokers.alphapoint.sim import AlphaPointSim, start
from runner.model import Instrument, OrderRequest, Side
from runner.wirejson import dumps

UPGRADE = (
    b"GET /WSGateway/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(seq: int, name: str, payload: object) -> bytes:
    text = json.dumps({"m": 0, "i": seq, "n": name, "o": dumps(payload)})
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


async def read_until(s: socket.socket, marker: bytes, count: int = 1) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while got.count(marker) < count:
        chunk = await loop.sock_recv(s, 65536)
        assert chunk, got
        got += chunk
    return got


@pytest.fixture
async def sim() -> AsyncIterator[AlphaPointSim]:
    async with start() as s:
        yield s


async def test_frames_held_back_behind_another_keep_the_time_they_were_read(
    sim: AlphaPointSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = socket.create_connection(("127.0.0.1", sim.port))
    s.setblocking(False)
    try:
        s.sendall(UPGRADE)
        assert (await read_until(s, b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        s.sendall(frame(1, "AuthenticateUser", {"UserName": "trader", "Password": "trader-pass"}))
        assert b'Authenticated\\":true' in await read_until(s, b"AuthenticateUser")
        user = sim.users["trader"]
        acct = wire.AccountRef(oms_id=user.oms_id, account_id=user.account_id)
        reliance = Instrument("NSE", "RELIANCE")
        iid = wire.instrument_id_of(sim.master.resolve(reliance))
        orders = [wire.send_order_body(OrderRequest(cid, reliance, Side.BUY, 1), iid, acct)
                  for cid in ("arr-a", "arr-b")]
        with time_machine.travel(T0, tick=False) as traveller, first_place_holds_the_loop(
            monkeypatch, sim.exchange.engine, traveller.shift
        ) as ran:
            loop, steps = asyncio.get_running_loop(), []
            held = sim.exchange.engine.place

            def place(*args: object, **kwargs: object) -> object:
                steps.append("place")
                loop.call_soon(steps.append, "turn")  # runs once the loop turns
                return held(*args, **kwargs)

            monkeypatch.setattr(sim.exchange.engine, "place", place)
            # both frames in one write: the simulator reads them in one pass, then handles one after the other
            s.sendall(frame(2, "SendOrder", orders[0]) + frame(3, "SendOrder", orders[1]))
            await read_until(s, b'"SendOrder"', 2)
    finally:
        s.close()
    assert ran == [T0, T0 + 5]  # the second order was handled 5 s after both were read
    assert steps[:3] == ["place", "turn", "place"]  # one frame per turn of the loop (sim_loop.Turnstile)
    ids = [str(o["ClientOrderId"]) for o in orders]
    assert sim.arrivals == {ids[0]: T0, ids[1]: T0}
