"""The Broker contract suite against the paper broker, on a real SQLite file per test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from helpers.contract.broker_contract import BrokerContract, Harness, Market

from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.matching import MatchingConfig


class TestPaperContract(BrokerContract):
    @pytest.fixture
    def broker_factory(
        self, tmp_path: Path
    ) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
        @contextlib.asynccontextmanager
        async def factory(config: MatchingConfig) -> AsyncIterator[Harness]:
            market = Market.new()
            broker = PaperBroker("contract", db_url=f"sqlite:///{tmp_path / 'paper.db'}", clock=market.clock,
                                 prices=market.prices, config=config)
            await broker.connect()
            yield Harness(broker, market)
            await broker.close()

        return factory


class TestPaperContractInMemory(TestPaperContract):
    @pytest.fixture
    def broker_factory(
        self, tmp_path: Path
    ) -> Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]:
        @contextlib.asynccontextmanager
        async def factory(config: MatchingConfig) -> AsyncIterator[Harness]:
            market = Market.new()
            broker = PaperBroker("contract", db_url="sqlite://", clock=market.clock, prices=market.prices,
                                 config=config)
            await broker.connect()
            yield Harness(broker, market)

        return factory
