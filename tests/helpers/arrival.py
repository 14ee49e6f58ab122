"""Requests sent to a wire simulator all at once, to check its arrival stamp (runner.brokers.sim_front):
each on a connection of its own, every byte in the kernel before the simulator's loop (the test's own)
runs again, so it reads them all in one pass and then runs their handlers one after the other."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runner.wirejson import dumps

T0 = 1_790_000_000.0  # the wall clock the tests travel to (time-machine, not ticking)


def http_post(path: str, body: Any, headers: dict[str, str]) -> bytes:
    raw = dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(raw)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


async def send_at_once(port: int, requests: list[bytes]) -> list[bytes]:
    """Each of ``requests`` on a connection of its own, written before yielding to the loop; the first
    chunk of each reply."""
    socks = []
    try:
        for raw in requests:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(raw)
            s.setblocking(False)
            socks.append(s)
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.sock_recv(s, 4096) for s in socks)))
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def first_place_holds_the_loop(
    monkeypatch: pytest.MonkeyPatch, engine: Any, shift: Callable[[float], None], seconds: float = 5.0
) -> Iterator[list[float]]:
    """The matching engine's first ``place`` moves the wall clock ``seconds`` on (a handler holding the
    loop, played by the clock); yields the wall times at which each ``place`` ran."""
    import time

    ran: list[float] = []
    real = engine.place

    def place(*args: Any, **kwargs: Any) -> Any:
        ran.append(time.time())
        if len(ran) == 1:
            shift(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "place", place)
    yield ran
