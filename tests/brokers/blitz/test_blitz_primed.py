"""Primed place on Blitz (runner.brokers.primed): the armed order's request built as bytes with its own
connection while preparing, written at the instant; against the Blitz simulator over real sockets, as
the Kotak primed tests do. A request that no longer matches (other fields, another login) or whose
connection closed goes the ordinary way; once written, any failure is an unknown outcome settled by
lookup, never a re-send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from helpers.blitz import IDEA, broker
from helpers.primed_fire import record_primed_writes

from runner.brokers.blitz.client import BlitzBroker
from runner.brokers.blitz.sim import Running
from runner.brokers.primed import PrimedRequest, adapter_of
from runner.errors import OutcomeUnknown
from runner.model import OrderRequest, OrderType, Side


@pytest.fixture
async def b(sim: Running) -> AsyncIterator[BlitzBroker]:
    adapter = broker(sim)
    await adapter.connect()
    yield adapter
    await adapter.close()


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of primed requests written to their sockets."""
    return record_primed_writes(monkeypatch)


def _limit(cid: str, price: str = "10.50") -> OrderRequest:
    return OrderRequest(cid, IDEA, Side.BUY, 10, OrderType.LIMIT, price=Decimal(price))


def _places(sim: Running) -> list[tuple[str, Any]]:
    """(path, body) of every place request the simulator received, in order."""
    return [(p, body) for m, p, body in sim.sim.requests if m == "POST" and p.endswith("placeOrder")]


def _placed(sim: Running, cid: str) -> int:
    return len(sim.sim.orders_with_correlation(cid))


async def test_blitz_is_primable_so_the_executor_primes_its_armed_orders(b: BlitzBroker) -> None:
    assert adapter_of(b) is b


async def test_a_primed_place_goes_out_as_the_ordinary_one_would(
    sim: Running, b: BlitzBroker, written: list[str]
) -> None:
    await b.place(_limit("rnordinary000000"))
    await b.prime(_limit("rnprimed00000000"))
    assert written == [] and _placed(sim, "rnprimed00000000") == 0  # priming sends nothing
    order = await b.place(_limit("rnprimed00000000"))
    assert len(written) == 1 and written[0].endswith("placeOrder")
    assert order.client_order_id == "rnprimed00000000" and order.broker_order_id
    assert _placed(sim, "rnordinary000000") == 1 and _placed(sim, "rnprimed00000000") == 1
    (path1, ordinary), (path2, primed) = _places(sim)
    assert path1 == path2
    assert {k: v for k, v in ordinary.items() if k != "correlationOrderId"} == {
        k: v for k, v in primed.items() if k != "correlationOrderId"
    }
    assert b._primed == {}


async def test_a_primed_place_not_matching_the_request_or_login_or_closed_is_sent_the_ordinary_way(
    sim: Running, b: BlitzBroker, written: list[str]
) -> None:
    await b.prime(_limit("rnchanged0000000", "10.50"))
    await b.place(_limit("rnchanged0000000", "10.40"))  # not what was primed: built afresh
    await b.prime(_limit("rnclosed00000000"))
    b._primed["rnclosed00000000"][2].close()  # e.g. the server dropped the idle connection
    await b.place(_limit("rnclosed00000000"))
    await b.prime(_limit("rnrelogin0000000"))
    await b.relogin()  # a new token: the primed request carries the old one
    assert not b.write_primed(_limit("rnrelogin0000000"))
    await b.place(_limit("rnrelogin0000000"))
    assert written == [] and b._primed == {}
    assert [body["correlationOrderId"] for _, body in _places(sim)] == [
        "rnchanged0000000", "rnclosed00000000", "rnrelogin0000000"
    ]
    assert Decimal(str(_places(sim)[0][1]["price"])) == Decimal("10.40")


async def test_a_primed_place_whose_reply_is_lost_is_unknown_settled_by_lookup_never_resent(
    sim: Running, b: BlitzBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await b.prime(_limit("rnlostreply00000"))

    async def lost(self: PrimedRequest) -> Any:
        raise ConnectionResetError("reset after the request was written")

    monkeypatch.setattr(PrimedRequest, "_reply", lost)
    with pytest.raises(OutcomeUnknown):
        await b.place(_limit("rnlostreply00000"))
    assert b._primed == {}
    for _ in range(500):  # until the simulator has handled the written request (its reply was "lost")
        if _placed(sim, "rnlostreply00000"):
            break
        await asyncio.sleep(0.01)
    found = await b.get_order("rnlostreply00000")  # the lookup settles it: it arrived
    assert found is not None and found.broker_order_id
    assert _placed(sim, "rnlostreply00000") == 1 and len(_places(sim)) == 1  # written once


async def test_a_primed_request_written_ahead_is_placed_once_and_its_place_reads_the_reply(
    sim: Running, b: BlitzBroker
) -> None:
    request = _limit("rnwrittenahead00")
    assert not b.write_primed(request)  # nothing primed: the ordinary path
    await b.prime(request)
    assert not b.write_primed(_limit("rnwrittenahead00", "10.40"))  # not what was primed
    assert b.write_primed(request)
    assert not b.write_primed(request)  # once
    order = await b.place(request)
    assert order.client_order_id == "rnwrittenahead00" and order.broker_order_id
    assert _placed(sim, "rnwrittenahead00") == 1 and len(_places(sim)) == 1 and b._primed == {}


async def test_a_primed_request_is_not_written_ahead_without_a_free_rate_limit_token(
    sim: Running, b: BlitzBroker
) -> None:
    request = _limit("rnsecond00000000")
    await b.prime(request)
    b.limiter.penalize(b._primed["rnsecond00000000"][3], 0.05)  # no token for 50 ms
    assert not b.write_primed(request)  # its place waits for the token, as ever
    await b.place(request)
    assert _placed(sim, "rnsecond00000000") == 1 and len(_places(sim)) == 1
