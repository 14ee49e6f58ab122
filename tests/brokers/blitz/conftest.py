"""Fixtures every Blitz test module shares: the app key in the environment, a market-hours clock and the
loopback simulator on it (a module with a simulator of its own overrides ``sim``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from helpers.blitz import APP_KEY, APP_KEY_ENV, SIM_OPTIONS, market_time

from runner.brokers.blitz.sim import Running, start
from runner.clock import VirtualClock


@pytest.fixture(autouse=True)
def _app_key() -> Iterator[None]:
    os.environ[APP_KEY_ENV] = APP_KEY
    yield
    os.environ.pop(APP_KEY_ENV, None)


@pytest.fixture
def clock() -> VirtualClock:
    return market_time()


@pytest.fixture
async def sim(clock: VirtualClock) -> AsyncIterator[Running]:
    async with start(clock=clock, options=SIM_OPTIONS) as running:
        yield running
