"""The ODIN simulator at T0 and a connected adapter on its user ``odin1`` (a module's own fixtures of the
same name take precedence)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers.odin import MASTER, T0, engine

from runner.brokers.odin.client import OdinBroker, create
from runner.brokers.odin.sim import OdinSim, start
from runner.clock import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def sim(clock: VirtualClock) -> AsyncIterator[OdinSim]:
    async with start(clock=clock, master=MASTER, engine=engine()) as s:
        yield s


@pytest.fixture
async def broker(sim: OdinSim) -> AsyncIterator[OdinBroker]:
    b = create(sim.account("odin1"), master=MASTER)
    await b.connect()
    yield b
    await b.close()
