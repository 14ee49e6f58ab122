"""The Broker contract suite against the Blitz adapter and its simulator over loopback, faults off and on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from helpers.blitz import FIXTURES, account
from helpers.contract.broker_contract import BrokerContract, Harness, Market

from runner.brokers.blitz.client import create
from runner.brokers.blitz.sim import start
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine

CONTRACT_MASTER = FIXTURES / "contract_instruments.csv"


def _factory(
    faults: str, dialect: str
) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
    @contextlib.asynccontextmanager
    async def factory(config: MatchingConfig) -> AsyncIterator[Harness]:
        market = Market.new()
        master = InstrumentMaster.load(CONTRACT_MASTER, broker="blitz")
        engine = MatchingEngine(market.prices, config)
        async with start(
            FaultPlan.parse(faults),
            clock=market.clock,
            master=master,
            engine=engine,
            options={"retry_after": "0.01"},
        ) as sim:
            acct = account(sim, dialect=dialect).model_copy(update={"instruments": str(CONTRACT_MASTER)})
            broker = create(acct, clock=market.clock)
            await broker.connect()
            try:
                yield Harness(broker, market)
            finally:
                await broker.close()

    return factory


class TestBlitzContract(BrokerContract):
    @pytest.fixture
    def broker_factory(self) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
        return _factory("", "sdk")


class TestBlitzSeedDialectContract(BrokerContract):
    @pytest.fixture
    def broker_factory(self) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
        return _factory("", "seed")


class TestBlitzContractWithFaults(BrokerContract):
    @pytest.fixture(params=["5xx=0.1,reset=0.05,drop=0.1,429=0.05,seed=3", "drop=0.3,expire=20s,seed=5"])
    def broker_factory(
        self, request: pytest.FixtureRequest
    ) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
        return _factory(str(request.param), "sdk")
