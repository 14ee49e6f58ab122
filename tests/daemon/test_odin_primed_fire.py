"""A daemon fire on an ODIN account goes out through a primed request (runner.brokers.primed): the
executor primes the armed order while preparing (ODIN is Primable now, as Kotak and Blitz), and at the
instant its request is one socket write; the ODIN simulator over real sockets sees it exactly once, under
the order_identifier of the ordinary path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from helpers.odin import MASTER, engine
from helpers.primed_fire import INSTANT, LeadClock, fire_primed

from runner.brokers.odin.client import create
from runner.brokers.odin.sim import start
from runner.brokers.odin.wire import REGULAR_PATH, order_identifier

PLAYBOOK = """\
version: 1
name: entry
timezone: Asia/Kolkata
account: odin1
schedule: {daily: "10:00"}
steps:
  - {kind: place, id: bid, instrument: {exchange: NSE, symbol: IDEA}, side: BUY, quantity: 10,
     type: MARKET}
"""


async def test_a_fire_on_odin_is_sent_through_its_primed_request_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = LeadClock(INSTANT - dt.timedelta(seconds=1))
    async with start(clock=clock, master=MASTER, engine=engine()) as sim:
        adapter = create(sim.account("odin1"), master=MASTER)
        try:
            intent, written = await fire_primed(tmp_path, monkeypatch, clock, PLAYBOOK, "odin1", adapter)
            assert len(written) == 1 and written[0].endswith(REGULAR_PATH)
            places = [body for m, p, body in sim.requests if m == "POST" and p == REGULAR_PATH]
            assert [body["order_identifier"] for body in places] == [order_identifier(intent.client_order_id)]
            assert adapter._primed == {}
        finally:
            await adapter.close()
