"""Primed place on ODIN (runner.brokers.primed), as on Kotak Neo and Blitz: the armed order's request built
as bytes with its own connection while preparing, written at the instant; against the ODIN simulator over
real sockets. A request that no longer matches (other fields, another login) or whose connection closed
goes the ordinary way; once written, any failure is an unknown outcome settled by lookup, never a
re-send; the order's 10-character order_identifier is the ordinary path's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.odin import IDEA
from helpers.primed_fire import record_primed_writes

from runner.brokers.odin.client import OdinBroker
from runner.brokers.odin.sim import OdinSim
from runner.brokers.odin.wire import REGULAR_PATH, order_identifier
from runner.brokers.primed import PrimedRequest, adapter_of
from runner.errors import OutcomeUnknown
from runner.model import OrderRequest, OrderType, Side


@pytest.fixture
def b(broker: OdinBroker) -> OdinBroker:
    return broker  # the connected adapter (conftest), by this module's short name


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of primed requests written to their sockets."""
    return record_primed_writes(monkeypatch)


def _limit(cid: str, quantity: int = 10) -> OrderRequest:
    return OrderRequest(cid, IDEA, Side.BUY, quantity, OrderType.MARKET)


def _places(sim: OdinSim) -> list[dict[str, Any]]:
    """The body of every regular place request the simulator received, in order."""
    return [body for m, p, body in sim.requests if m == "POST" and p == REGULAR_PATH]


def _placed(sim: OdinSim, cid: str) -> int:
    return sum(1 for body in _places(sim) if body["order_identifier"] == order_identifier(cid))


async def _arrived(sim: OdinSim, cid: str) -> None:
    for _ in range(500):  # until the simulator has handled the written request
        if _placed(sim, cid):
            return
        await asyncio.sleep(0.01)


async def test_odin_is_primable_so_the_executor_primes_its_armed_orders(b: OdinBroker) -> None:
    assert adapter_of(b) is b


async def test_a_primed_place_goes_out_as_the_ordinary_one_would(
    sim: OdinSim, b: OdinBroker, written: list[str]
) -> None:
    ordinary = await b.place(_limit("rnordinary000000"))
    await b.prime(_limit("rnprimed00000000"))
    assert written == [] and _placed(sim, "rnprimed00000000") == 0  # priming sends nothing
    order = await b.place(_limit("rnprimed00000000"))
    assert len(written) == 1 and written[0].endswith(REGULAR_PATH)
    assert order.client_order_id == "rnprimed00000000" and order.broker_order_id
    assert order.tag == order_identifier("rnprimed00000000") and ordinary.tag == order_identifier(
        "rnordinary000000")
    assert _placed(sim, "rnordinary000000") == 1 and _placed(sim, "rnprimed00000000") == 1
    first, second = _places(sim)
    assert {k: v for k, v in first.items() if k != "order_identifier"} == {
        k: v for k, v in second.items() if k != "order_identifier"
    }
    found = await b.get_order("rnprimed00000000")  # the id mapping is the ordinary path's
    assert found is not None and found.broker_order_id == order.broker_order_id
    assert b._primed == {}


async def test_a_primed_place_not_matching_the_request_or_login_or_closed_is_sent_the_ordinary_way(
    sim: OdinSim, b: OdinBroker, written: list[str]
) -> None:
    await b.prime(_limit("rnchanged0000000", 10))
    await b.place(_limit("rnchanged0000000", 11))  # not what was primed: built afresh
    await b.prime(_limit("rnclosed00000000"))
    b._primed["rnclosed00000000"][2].close()  # e.g. the server dropped the idle connection
    await b.place(_limit("rnclosed00000000"))
    await b.prime(_limit("rnrelogin0000000"))
    await b.relogin()  # a new token: the primed request carries the old one
    assert not b.write_primed(_limit("rnrelogin0000000"))
    await b.place(_limit("rnrelogin0000000"))
    assert written == [] and b._primed == {}
    assert [body["order_identifier"] for body in _places(sim)] == [
        order_identifier(c) for c in ("rnchanged0000000", "rnclosed00000000", "rnrelogin0000000")
    ]
    assert _places(sim)[0]["quantity"] == 11


async def test_unprime_drops_the_primed_request(sim: OdinSim, b: OdinBroker, written: list[str]) -> None:
    await b.prime(_limit("rnunprimed000000"))
    primed = b._primed["rnunprimed000000"][2]
    b.unprime("rnunprimed000000")
    assert b._primed == {} and not primed.usable()
    assert not b.write_primed(_limit("rnunprimed000000"))
    await b.place(_limit("rnunprimed000000"))
    assert written == [] and _placed(sim, "rnunprimed000000") == 1


async def test_a_primed_place_whose_reply_is_lost_is_unknown_settled_by_lookup_never_resent(
    sim: OdinSim, b: OdinBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await b.prime(_limit("rnlostreply00000"))

    async def lost(self: PrimedRequest) -> Any:
        await _arrived(sim, "rnlostreply00000")  # the simulator took the order; its reply is "lost"
        raise ConnectionResetError("reset after the request was written")

    monkeypatch.setattr(PrimedRequest, "_reply", lost)
    order = await b.place(_limit("rnlostreply00000"))  # the lookup settles it: it arrived
    assert order.broker_order_id and order.client_order_id == "rnlostreply00000"
    assert _placed(sim, "rnlostreply00000") == 1 and len(_places(sim)) == 1  # written once
    assert b._primed == {}


async def test_a_primed_place_whose_reply_is_lost_before_it_arrived_stays_unknown(
    sim: OdinSim, b: OdinBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await b.prime(_limit("rnlostearly00000"))
    monkeypatch.setattr(PrimedRequest, "write", lambda self: setattr(self, "_sent", True))  # never arrives

    async def lost(self: PrimedRequest) -> Any:
        raise ConnectionResetError("reset after the request was written")

    monkeypatch.setattr(PrimedRequest, "_reply", lost)
    with pytest.raises(OutcomeUnknown):
        await b.place(_limit("rnlostearly00000"))
    assert len(_places(sim)) == 0  # never re-sent the ordinary way


async def test_a_primed_request_written_ahead_arrives_before_place_and_is_placed_once(
    sim: OdinSim, b: OdinBroker
) -> None:
    request = _limit("rnwrittenahead00")
    assert not b.write_primed(request)  # nothing primed: the ordinary path
    await b.prime(request)
    assert not b.write_primed(_limit("rnwrittenahead00", 11))  # not what was primed
    assert b.write_primed(request)
    assert not b.write_primed(request)  # once
    await _arrived(sim, "rnwrittenahead00")
    assert order_identifier("rnwrittenahead00") in sim.arrivals  # its bytes were read before place
    order = await b.place(request)
    assert order.client_order_id == "rnwrittenahead00" and order.broker_order_id
    assert _placed(sim, "rnwrittenahead00") == 1 and len(_places(sim)) == 1 and b._primed == {}


async def test_a_primed_request_is_not_written_ahead_without_a_free_rate_limit_token(
    sim: OdinSim, b: OdinBroker
) -> None:
    request = _limit("rnsecond00000000")
    await b.prime(request)
    b.limiter.penalize(b._primed["rnsecond00000000"][3], 0.05)  # no token for 50 ms
    assert not b.write_primed(request)  # its place waits for the token, as ever
    await b.place(request)
    assert _placed(sim, "rnsecond00000000") == 1 and len(_places(sim)) == 1
