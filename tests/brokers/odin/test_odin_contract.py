"""The Broker contract suite against the ODIN adapter over real sockets to its simulator, with faults off
and on (dropped replies, resets, 5xx, 429, session expiry). No order identifier is ever sent twice."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from helpers.contract.broker_contract import CALL, EQUITY, FUTURE, PUT, BrokerContract, Harness, Market

from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.odin.client import create
from runner.brokers.odin.sim import OdinSim, start
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine

Factory = Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]


def contract_master() -> InstrumentMaster:
    return InstrumentMaster([
        MasterRow(EQUITY, "2885", "RELIANCE"),
        MasterRow(FUTURE, "35001", "NIFTY"),
        MasterRow(CALL, "45001", "NIFTY"),
        MasterRow(PUT, "45002", "NIFTY"),
    ], broker="odin")


def make_factory(monkeypatch: pytest.MonkeyPatch, faults: str | None, sims: list[OdinSim]) -> Factory:
    @contextlib.asynccontextmanager
    async def factory(config: MatchingConfig) -> AsyncIterator[Harness]:
        market = Market.new()
        master = contract_master()
        engine = MatchingEngine(market.prices, config)
        async with start(faults=FaultPlan.parse(faults), clock=market.clock, master=master, engine=engine,
                         retry_after="0.001") as sim:
            sims.append(sim)
            account, env = sim.account_env("contract",
                                           rate_limit={"orders_per_second": 1000, "burst": 100})
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            broker = create(account, clock=market.clock, master=master)
            await broker.connect()
            yield Harness(broker, market)
            await broker.close()
            # The duplicate-id test sends one id twice on purpose; the adapter must not pass it on.
            assert sim.duplicate_tags == []

    return factory


class TestOdinContract(BrokerContract):
    @pytest.fixture
    def broker_factory(self, monkeypatch: pytest.MonkeyPatch) -> Factory:
        return make_factory(monkeypatch, None, [])


class TestOdinContractWithFaults(BrokerContract):
    @pytest.fixture(params=[
        "drop=0.15,reset=0.05,5xx=0.05,429=0.05,seed=1",
        "drop=0.25,429=0.1,expire=20s,seed=2",
    ])
    def broker_factory(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Factory:
        return make_factory(monkeypatch, request.param, [])
