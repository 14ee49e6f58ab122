"""Position tests' brokers: a simulated venue's adapter, and rows without the figures some brokers do not
report."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from runner.brokers.base import Broker, ForwardingBroker
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.registry import create_broker
from runner.clock import VirtualClock
from runner.model import Position


class Unreported(ForwardingBroker):
    """A broker whose position rows carry no average price or realised P&L (as ODIN's): the views must
    compute them from the day's orders."""

    async def positions(self) -> Sequence[Position]:
        return [
            dataclasses.replace(
                p,
                average_price=Decimal(0),
                realized_pnl=Decimal(0),
                average_price_reported=False,
                realized_pnl_reported=False,
            )
            for p in await self.inner.positions()
        ]


@contextlib.asynccontextmanager
async def sim_venue(
    kind: str,
    name: str,
    master_path: Path,
    engine: MatchingEngine,
    clock: VirtualClock,
    mp: pytest.MonkeyPatch,
) -> AsyncIterator[Broker]:
    """The ``kind`` adapter (kotak_neo or odin) on its loopback simulator, over ``master_path``."""
    master = InstrumentMaster.load(master_path, broker=kind)
    if kind == "kotak_neo":
        from runner.brokers.kotak_neo.sim import account_for, start

        async with start(clock=clock, master=master, engine=engine) as sim:
            account, env = account_for(sim, name, instruments=str(master_path))
            for k, v in env.items():
                mp.setenv(k, v)
            yield create_broker(account, clock=clock)
        return
    from runner.brokers.odin.sim import start as odin_start

    async with odin_start(clock=clock, master=master, engine=engine) as osim:
        account, env = osim.account_env(name, instruments=str(master_path))
        for k, v in env.items():
            mp.setenv(k, v)
        yield create_broker(account, clock=clock)
