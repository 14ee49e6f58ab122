"""The Broker contract suite against the AlphaPoint adapter talking to its simulator over a real
WebSocket, with faults off and on (faults on: every ambiguity is resolved by lookup, never by re-send)."""

from __future__ import annotations

import contextlib
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from helpers.contract.broker_contract import BrokerContract, Harness, Market

from runner.accounts import Account, RateLimit
from runner.brokers.alphapoint.client import create
from runner.brokers.alphapoint.sim import MASTER_FILE, AlphaPointSim, start
from runner.brokers.paper.matching import MatchingConfig

MASTER = str(MASTER_FILE)
FAULTS_SEEN: list[object] = []
Factory = Callable[[MatchingConfig], contextlib.AbstractAsyncContextManager[Harness]]


def no_duplicates(sim: AlphaPointSim) -> None:
    """Every ClientOrderId the OMS holds belongs to one order, except CancelReplace incarnations."""
    counts = Counter(m.client_numeric for oid, m in sim.exchange.meta.items() if m.orig_order_id == oid)
    assert all(n == 1 for n in counts.values()), counts


class TestAlphaPointContract(BrokerContract):
    faults: str | None = None

    @pytest.fixture
    def broker_factory(self, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Factory:
        # A fresh simulator per test: vary the fault seed by test so the faulty run meets every kind.
        faults = self.faults and f"{self.faults},seed={zlib.crc32(request.node.name.encode())}"
        monkeypatch.setenv("AP_USER", "trader")
        monkeypatch.setenv("AP_PASS", "trader-pass")

        @contextlib.asynccontextmanager
        async def factory(config: MatchingConfig) -> AsyncIterator[Harness]:
            market = Market.new()
            async with start(
                faults=faults, clock=market.clock.now, prices=market.prices, config=config
            ) as sim:
                account = Account(
                    name="ct",
                    broker="alphapoint",
                    endpoints={"ws": sim.url},
                    instruments=MASTER,
                    credentials={"username": {"env": "AP_USER"}, "password": {"env": "AP_PASS"}},
                    rate_limit=RateLimit(orders_per_second=1000, burst=1000),
                )
                broker = create(account)
                await broker.connect()
                try:
                    yield Harness(broker, market)
                    no_duplicates(sim)
                    FAULTS_SEEN.extend(f for _, f in sim.fault_log)
                finally:
                    await broker.close()

        return factory


class TestAlphaPointContractWithFaults(TestAlphaPointContract):
    # Seeded: drop-after-accept, disconnect mid-request, server errors, throttling, session expiry.
    faults = (
        "drop=0.15,disconnect=0.1,5xx=0.1,429=0.1,reset=0.05,expire=20s,only=place+cancel+modify+get+orders"
    )


def test_faults_really_fired_in_the_faulty_contract_run() -> None:
    # Runs after the classes above in file order: the faulty suite must have met every kind of fault.
    kinds = {getattr(f, "value", f) for f in FAULTS_SEEN}
    assert {"drop", "disconnect", "5xx", "429"} <= kinds, kinds
