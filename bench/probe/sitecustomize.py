"""Bench-only instrumentation of `runner serve` processes (bench/lateness.py puts this directory on their
PYTHONPATH; nothing in the runner imports it). Python imports ``sitecustomize`` at start-up, so the
daemon under measurement is the real one, unchanged.

* ``RUNNER_PROBE_DIR``: every place request's body is noted with the wall time its last byte was written
  to the socket (aiohttp's ``on_request_chunk_sent``), as ``<client id>\\t<epoch s>`` lines in
  ``left-<pid>.tsv`` there: when the request left the runner, not when its reply came back.
* ``RUNNER_PROFILE=<path>``: the whole process runs under cProfile, dumped to ``<path>.<pid>`` at exit.
* ``RUNNER_NO_WARM=1``: fires' connections are not opened ahead (A/B of runner.brokers.warm).
* ``RUNNER_PROFILE_INSTANT=<path>``: the event loop's thread under cProfile from each instant's release
  for 0.5 s, dumped to ``<path>.<pid>.<n>``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import time
from typing import Any
from urllib.parse import parse_qs

# the id a JSON place body carries: Blitz's correlationOrderId (our client id), ODIN's order_identifier
# (its 10-character form, runner.brokers.odin.wire.order_identifier); Kotak's is in urlencoded jData
_JSON_ID = re.compile(rb'"(?:correlationOrderId|order_identifier)": ?"([^"]+)"')


def _install_probe(folder: str) -> None:
    import aiohttp

    sink = open(os.path.join(folder, f"left-{os.getpid()}.tsv"), "a", buffering=1)  # noqa: SIM115

    async def chunk_sent(session: Any, ctx: Any, params: Any) -> None:
        when = time.time()
        if params.method != "POST":
            return
        if not params.url.path.endswith("/place"):
            found = _JSON_ID.search(bytes(params.chunk))
            if found is not None:
                sink.write(f"{found.group(1).decode()}\t{when:.6f}\n")
            return
        try:
            body = parse_qs(bytes(params.chunk).decode())
            cid = json.loads(body["jData"][0])["ig"]
        except (KeyError, ValueError, IndexError):
            return
        sink.write(f"{cid}\t{when:.6f}\n")

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(chunk_sent)
    original = aiohttp.ClientSession.__init__

    def init(self: Any, *args: Any, **kw: Any) -> None:
        kw["trace_configs"] = [*(kw.get("trace_configs") or ()), trace]
        original(self, *args, **kw)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]

    # a primed request (runner.brokers.primed) is written by one transport.write, not through aiohttp
    from runner.brokers.primed import PrimedRequest

    write = PrimedRequest.write

    ig = re.compile(rb"%22ig%22%3A\+?%22([0-9A-Za-z_-]+)%22")  # "ig": "<cid>" in the urlencoded jData

    import asyncio

    # Noted cheaply: this runs between one fire's request and the next one's, so the notes of a loop turn
    # are written to the (line-buffered) sink together once the turn is over, not one write(2) each
    # between the requests (a syscall per request in the instant's turn, in the runner and the baseline).
    notes: list[str] = []

    def flush() -> None:
        sink.write("".join(notes))
        notes.clear()

    atexit.register(flush)

    def primed_write(self: Any) -> None:
        write(self)
        when = time.time()
        found = ig.search(self.raw) if self.url.endswith("/place") else _JSON_ID.search(self.raw)
        if found is not None:
            notes.append(f"{found.group(1).decode()}\t{when:.6f}\n")
            if len(notes) == 1:
                asyncio.get_running_loop().call_soon(flush)

    PrimedRequest.write = primed_write  # type: ignore[method-assign]


def _install_profile(path: str) -> None:
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    atexit.register(lambda: (prof.disable(), prof.dump_stats(f"{path}.{os.getpid()}")))


def _install_instant_profile(path: str) -> None:
    import asyncio
    import cProfile
    import itertools

    from runner.daemon import release

    seq = itertools.count()
    original = release.InstantGate._sleep

    async def sleep(self: Any, instant: Any) -> None:
        await original(self, instant)
        prof = cProfile.Profile()
        prof.enable()
        n = next(seq)

        def stop() -> None:
            prof.disable()
            prof.dump_stats(f"{path}.{os.getpid()}.{n}")

        asyncio.get_running_loop().call_later(float(os.environ.get("RUNNER_PROFILE_SECONDS", "0.5")), stop)

    release.InstantGate._sleep = sleep  # type: ignore[method-assign]


def _no_warm() -> None:
    """A/B: no connections opened ahead of the instant (runner.brokers.warm)."""
    from runner.brokers import warm

    async def nothing(broker: Any, sends: int) -> None:
        return None

    warm.warm = nothing  # type: ignore[assignment]


if os.environ.get("RUNNER_NO_WARM"):
    _no_warm()
if folder := os.environ.get("RUNNER_PROBE_DIR"):
    _install_probe(folder)
if profile := os.environ.get("RUNNER_PROFILE"):
    _install_profile(profile)
if instant_profile := os.environ.get("RUNNER_PROFILE_INSTANT"):
    _install_instant_profile(instant_profile)
