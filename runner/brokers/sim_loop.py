"""The event loop a wire simulator process (``runner sim``) runs on: uvloop when it is installed (the
``sim`` extra), else asyncio's own. A burst of a thousand place requests over as many connections is
mostly accept/read/write plumbing; uvloop does that part in C, so arrivals measure the runner, not the
simulator. Simulators only: ``runner serve`` and ``runner run`` keep asyncio's default loop."""

from __future__ import annotations

import asyncio
import collections
import enum
import gc
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SimLoop(enum.StrEnum):
    AUTO = "auto"  # uvloop if installed, else asyncio
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: SimLoop) -> SimLoop:
    """The loop ``choice`` means here; LookupError for uvloop asked for by name and not installed."""
    if choice is SimLoop.AUTO:
        return SimLoop.UVLOOP if uvloop_available() else SimLoop.ASYNCIO
    if choice is SimLoop.UVLOOP and not uvloop_available():
        raise LookupError("uvloop is not installed (pip install 'runner[sim]')")
    return choice


def loop_factory(choice: SimLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None is asyncio's default loop."""
    if resolve(choice) is SimLoop.UVLOOP:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


def run(main: Coroutine[Any, Any, T], choice: SimLoop = SimLoop.AUTO) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to."""
    try:
        factory = loop_factory(choice)
    except LookupError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def settle_heap(young: int = 20_000) -> None:
    """Call once a simulator has started (its instrument master and price paths loaded): what exists now
    lives as long as the process, so the collector stops scanning it (``gc.freeze``), and young
    collections come every ``young`` allocations instead of 700. Profiled during a 1,000-request burst,
    full collections walking the startup heap were a quarter of the simulator's CPU; its per-request
    objects are freed by reference counting, the collector is there only for the odd cycle."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)


class Turnstile:
    """Lets one request handler start per turn of the event loop, so the loop polls its sockets between two
    handlers. Without it, the handlers of every request read in one poll (a hundred, in a burst) ran before
    the next poll, and the requests that reached the socket meanwhile were read, and their arrival
    stamped, only after all of those: queueing inside the simulator, measured as the runner's lateness. A
    broker's front end takes requests in on many cores; this one reads them as they come and serves
    them in order."""

    def __init__(self) -> None:
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._pumping = False

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._pumping:  # idle: this one goes now, the next waits for the next turn
            self._pumping = True
            loop.call_soon(self._pump)
            return
        waiter = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _pump(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a waiter gone (its client hung up) passes its turn on
                waiter.set_result(None)
                asyncio.get_running_loop().call_soon(self._pump)
                return
        self._pumping = False
