"""A daemon fire on a Blitz account goes out through a primed request (runner.brokers.primed): the
executor primes the armed order while preparing (Blitz is Primable now, as Kotak), and at the instant
its request is one socket write; the Blitz simulator over real sockets sees it exactly once."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.blitz import APP_KEY, APP_KEY_ENV, SIM_OPTIONS, broker
from helpers.primed_fire import INSTANT, LeadClock, fire_primed

from runner.brokers.blitz.sim import start

PLAYBOOK = """\
version: 1
name: entry
timezone: Asia/Kolkata
account: blitz1
schedule: {daily: "10:00"}
steps:
  - {kind: place, id: bid, instrument: {exchange: NSE, symbol: IDEA}, side: BUY, quantity: 10,
     type: LIMIT, price: 10.50}
"""


@pytest.fixture(autouse=True)
def _app_key() -> Iterator[None]:
    os.environ[APP_KEY_ENV] = APP_KEY
    yield
    os.environ.pop(APP_KEY_ENV, None)


async def test_a_fire_on_blitz_is_sent_through_its_primed_request_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = LeadClock(INSTANT - dt.timedelta(seconds=1))
    async with start(clock=clock, options=SIM_OPTIONS) as sim:
        adapter = broker(sim)
        try:
            intent, written = await fire_primed(tmp_path, monkeypatch, clock, PLAYBOOK, "blitz1", adapter)
            assert len(written) == 1 and written[0].endswith("placeOrder")
            assert len(sim.sim.orders_with_correlation(intent.client_order_id)) == 1
            places = [r for r in sim.sim.requests if r[0] == "POST" and r[1].endswith("placeOrder")]
            assert len(places) == 1 and adapter._primed == {}
        finally:
            await adapter.close()
