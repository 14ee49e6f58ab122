"""ODIN adapter against its loopback simulator, over real sockets: auth, orders, multileg, faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from helpers.odin import IDEA, MASTER, engine

from runner.brokers.base import Capability, MultilegBroker
from runner.brokers.faults import FaultPlan
from runner.brokers.odin.client import OdinBroker, create
from runner.brokers.odin.sim import OdinSim, start
from runner.brokers.odin.sim_book import SimUser
from runner.brokers.odin.wire import order_identifier
from runner.clock import VirtualClock
from runner.errors import (
    AuthExpired,
    InstrumentUnknown,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
)
from runner.ids import client_order_id, leg_client_id
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    OptionType,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)

FUT_NEAR = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29))
FUT_FAR = Instrument("NFO", "NIFTY", dt.date(2027, 1, 26))
CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.CE)
PE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.PE)


def ltp(sim: OdinSim, inst: Instrument, clock: VirtualClock) -> Decimal:
    return sim.engine.last_price(MASTER.resolve(inst).instrument, clock.now())


def req(cid: str, inst: Instrument = IDEA, side: Side = Side.BUY, qty: int = 1, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, instrument=inst, side=side, quantity=qty, **kw)


def resting_limit(sim: OdinSim, clock: VirtualClock, inst: Instrument, side: Side = Side.BUY) -> Decimal:
    """A limit 5% away from the market on the passive side: rests, inside the 20% band."""
    tick = MASTER.resolve(inst).instrument.tick_size or Decimal("0.05")
    price = ltp(sim, inst, clock) * (Decimal("0.95") if side is Side.BUY else Decimal("1.05"))
    return (price / tick).quantize(Decimal(1)) * tick


# -- auth ----------------------------------------------------------------------------------------------


async def test_login_sends_x_api_key_and_totp_and_uses_bearer_after(sim: OdinSim, broker: OdinBroker) -> None:
    method, path, body = sim.requests[0]
    assert (method, path) == ("POST", "/authentication/v1/user/session")
    assert body["user_id"] == "SIM1" and body["second_auth_type"] == "TOTP" and body["source"] == "WEBAPI"
    assert len(body["second_auth"]) == 6 and body["second_auth"].isdigit()
    assert len(sim.sessions) == 1
    assert await broker.orders() == []


async def test_wrong_password_is_rejected_not_retried(sim: OdinSim) -> None:
    bad = SimUser("SIM1", "wrong", "sim-api-key", totp_secret="JBSWY3DPEHPK3PXP")
    b = create(sim.account("bad", bad, env_prefix="RUNNER_ODIN_TEST_BAD"), master=MASTER)
    with pytest.raises(Rejected):
        await b.connect()
    await b.close()


async def test_session_expiry_a_read_relogs_in_once_a_write_is_left_to_the_gateway(
    clock: VirtualClock,
) -> None:
    async with start(
        clock=clock, master=MASTER, engine=engine(), faults=FaultPlan.parse("expire=60s")
    ) as sim:
        b = create(sim.account("odin1"), master=MASTER)
        await b.connect()
        clock.advance(61)
        with pytest.raises(AuthExpired):  # a write is never re-sent inside the adapter
            await b.place(req("rn-expiry-1"))
        assert "place" not in sim.acted
        await b.connect()  # what the engine's gateway does before its one retry
        placed = await b.place(req("rn-expiry-1"))
        logins = [r for r in sim.requests if r[1] == "/authentication/v1/user/session"]
        assert len(logins) == 2
        assert sim.acted["place"] == 1
        clock.advance(61)
        assert (await b.get_order("rn-expiry-1")) is not None  # a read logs in again by itself
        assert len([r for r in sim.requests if r[1] == "/authentication/v1/user/session"]) == 3
        assert (await b.get_order("rn-expiry-1")) is not None
        assert placed.broker_order_id
        await b.close()


async def test_relogin_happens_once_then_auth_error_surfaces(sim: OdinSim, broker: OdinBroker) -> None:
    sim.faults.expire_after = 0  # every token is expired on arrival
    with pytest.raises(AuthExpired):
        await broker.positions()
    logins = [r for r in sim.requests if r[1] == "/authentication/v1/user/session"]
    assert len(logins) == 2  # first connect + exactly one re-login


# -- regular orders ------------------------------------------------------------------------------------


async def test_place_market_order_fills_and_shows_in_positions(sim: OdinSim, broker: OdinBroker) -> None:
    placed = await broker.place(req("rn-mkt-1", qty=10))
    assert placed.status is OrderStatus.FILLED and placed.broker_order_id  # read back after the ack
    got = await broker.get_order("rn-mkt-1")
    assert got is not None
    assert got.status is OrderStatus.FILLED and got.filled_quantity == 10
    assert got.broker_order_id == placed.broker_order_id and got.average_price
    assert got.client_order_id == "rn-mkt-1" and got.tag == order_identifier("rn-mkt-1")
    positions = await broker.positions()
    assert [(p.instrument.key, p.quantity, p.product) for p in positions] == [("NSE IDEA", 10, Product.MIS)]


async def test_order_ids_with_odd_characters_are_uri_encoded(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    price = resting_limit(sim, clock, IDEA)
    placed = await broker.place(req("rn-enc-1", order_type=OrderType.LIMIT, price=price))
    assert placed.broker_order_id and placed.broker_order_id[-1] in "<>"
    cancelled = await broker.cancel(placed)
    assert cancelled.status in (OrderStatus.PENDING_CANCEL, OrderStatus.CANCELLED)
    method, path, _ = sim.requests[-2]  # the DELETE, then the read-back
    assert method == "DELETE" and path.endswith(placed.broker_order_id)
    assert sim.raw_paths[-2].endswith("%3C" if placed.broker_order_id.endswith("<") else "%3E")
    clock.advance(1)
    final = await broker.get_order_by_broker_id(placed.broker_order_id)
    assert final.status is OrderStatus.CANCELLED


async def test_modify_sends_fresh_traded_quantity_and_changes_price(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    price = resting_limit(sim, clock, IDEA)
    placed = await broker.place(req("rn-mod-1", qty=5, order_type=OrderType.LIMIT, price=price))
    new_price = price - Decimal("0.05")
    modified = await broker.modify(placed, Modification(price=new_price, quantity=6))
    assert modified.price == new_price and modified.quantity == 6 and modified.status is OrderStatus.OPEN
    put = next(r for r in sim.requests if r[0] == "PUT" and "/orders/regular/" in r[1])
    assert put[1] == f"/transactional/v1/orders/regular/NSE_EQ/{placed.broker_order_id}"
    assert put[2]["traded_quantity"] == 0 and put[2]["order_id"] == placed.broker_order_id


async def test_modify_or_cancel_a_filled_order_is_not_modifiable(broker: OdinBroker) -> None:
    placed = await broker.place(req("rn-done-1"))
    filled = await broker.get_order_by_broker_id(placed.broker_order_id or "")
    assert filled.status is OrderStatus.FILLED
    with pytest.raises(NotModifiable):
        await broker.modify(filled, Modification(quantity=2))
    with pytest.raises(NotModifiable):
        await broker.cancel(filled)


async def test_unknown_broker_id_is_not_found_and_unknown_client_id_is_none(broker: OdinBroker) -> None:
    with pytest.raises(NotFound):
        await broker.get_order_by_broker_id("NOPE000001<")
    assert await broker.get_order("rn-never-placed") is None


async def test_oms_rejection_after_the_ack_raises_rejected(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    far = (ltp(sim, IDEA, clock) * 2).quantize(Decimal("0.01"))  # outside the price band
    with pytest.raises(Rejected) as info:
        await broker.place(req("rn-rej-1", order_type=OrderType.LIMIT, price=far))
    assert info.value.code == "OMS_REJECT" and "band" not in str(info.value.code)
    assert sim.requests[-2][2]["order_identifier"] == order_identifier("rn-rej-1")  # it was accepted...
    got = await broker.get_order("rn-rej-1")  # ...and the book shows the OMS rejection
    assert got is not None and got.status is OrderStatus.REJECTED
    assert got.raw_status == "OMS_REJECT" and got.reject_reason


async def test_unknown_instrument_fails_before_anything_is_sent(sim: OdinSim, broker: OdinBroker) -> None:
    before = len(sim.requests)
    with pytest.raises(InstrumentUnknown):
        await broker.place(req("rn-unk-1", inst=Instrument("NSE", "NOSUCH")))
    assert len(sim.requests) == before


async def test_order_book_pages_are_all_read(sim: OdinSim, clock: VirtualClock) -> None:
    b = create(sim.account("odin1", options={"page_size": 2}), master=MASTER)
    price = resting_limit(sim, clock, IDEA)
    for i in range(5):
        await b.place(req(f"rn-page-{i}", order_type=OrderType.LIMIT, price=price))
    assert len(await b.orders()) == 5
    assert len(await b.open_orders()) == 5
    assert (await b.get_order("rn-page-0")) is not None  # the oldest, on the last page
    await b.close()


# -- multileg ------------------------------------------------------------------------------------------


def spread(cid: str, sim: OdinSim, clock: VirtualClock, *, marketable: bool) -> MultilegRequest:
    legs = []
    for n, (inst, side) in enumerate(((CE, Side.BUY), (PE, Side.SELL)), start=1):
        px = ltp(sim, inst, clock)
        if not marketable:
            px = resting_limit(sim, clock, inst, side)
        legs.append(
            req(
                f"{cid}-l{n}",
                inst=inst,
                side=side,
                qty=75,
                order_type=OrderType.LIMIT,
                price=px,
                product=Product.MIS,
                validity=Validity.DAY,
            )
        )
    return MultilegRequest(cid, tuple(legs))


async def test_native_multileg_place_fills_both_legs(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    assert isinstance(broker, MultilegBroker) and Capability.NATIVE_MULTILEG in broker.capabilities
    legs = await broker.place_multileg(spread("rn-ml-1", sim, clock, marketable=True))
    assert [o.status for o in legs] == [OrderStatus.FILLED] * 2  # read back after the ack
    post = next(r for r in sim.requests if r[1] == "/transactional/v1/orders/multileg")
    assert post[2]["type"] == "2L" and post[2]["order_type"] == "RL"
    assert [leg["leg_no"] for leg in post[2]["leg_details"]] == [1, 2]
    for o in legs:
        got = await broker.get_order(o.client_order_id)
        assert got is not None and got.status is OrderStatus.FILLED
        assert got.broker_order_id == o.broker_order_id
    qty = {p.instrument.key: p.quantity for p in await broker.positions()}
    assert qty == {CE.key: 75, PE.key: -75}


async def test_multileg_modify_sends_all_legs_and_cancel_by_gateway_order_no(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    legs = await broker.place_multileg(spread("rn-ml-2", sim, clock, marketable=False))
    gw = (legs[0].broker_order_id or "").split("#")[0]
    first_price = legs[0].price or Decimal(0)
    modified = await broker.modify_multileg(
        legs, [Modification(price=first_price - Decimal("0.05")), Modification()]
    )
    put = next(r for r in sim.requests if r[0] == "PUT" and "/multileg/" in r[1])
    assert put[1] == f"/transactional/v1/orders/multileg/modify/{gw}"
    assert len(put[2]["leg_details"]) == 2 and put[2]["leg_details"][0]["price"] == str(
        first_price - Decimal("0.05")
    )
    assert modified[0].price == first_price - Decimal("0.05")
    cancelled = await broker.cancel_multileg(modified)
    assert {o.status for o in cancelled} <= {OrderStatus.PENDING_CANCEL, OrderStatus.CANCELLED}
    assert any(r[1] == f"/transactional/v1/orders/multileg/cancel/{gw}" for r in sim.requests)
    clock.advance(1)
    for o in legs:
        got = await broker.get_order(o.client_order_id)
        assert got is not None and got.status is OrderStatus.CANCELLED
    with pytest.raises(NotModifiable):
        await broker.cancel_multileg(legs)


def derived_spread(group: str, sim: OdinSim, clock: VirtualClock) -> MultilegRequest:
    """A spread whose legs carry the ids the engine derives from the group id (runner.ids)."""
    legs = spread(group, sim, clock, marketable=False).legs
    return MultilegRequest(group, tuple(replace(leg, client_order_id=leg_client_id(group, n))
                                        for n, leg in enumerate(legs, start=1)))


async def test_multileg_legs_are_found_by_a_restarted_adapter(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    group = client_order_id("run-restart", "spread")
    request = derived_spread(group, sim, clock)
    placed = await broker.place_multileg(request)
    await broker.close()
    fresh = create(sim.account("odin1"), master=MASTER)  # a new process: nothing in memory
    assert fresh._legs == {} and fresh._by_tag == {}
    for n, leg in enumerate(placed, start=1):
        got = await fresh.get_order(leg_client_id(group, n))
        assert got is not None and got.client_order_id == leg_client_id(group, n)
        assert got.broker_order_id == leg.broker_order_id and got.status is OrderStatus.OPEN
        assert got.instrument.key == request.legs[n - 1].instrument.key and got.quantity == 75
    assert await fresh.get_order(leg_client_id(group, 3)) is None  # no third leg
    assert await fresh.get_order(leg_client_id(client_order_id("run-other", "spread"), 1)) is None
    await fresh.close()


async def test_a_restarted_adapter_does_not_send_a_multileg_twice(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    group = client_order_id("run-twice", "spread")
    request = derived_spread(group, sim, clock)
    placed = await broker.place_multileg(request)
    await broker.close()
    fresh = create(sim.account("odin1"), master=MASTER)
    again = await fresh.place_multileg(request)  # looked up first: found, not sent
    assert [o.broker_order_id for o in again] == [o.broker_order_id for o in placed]
    assert [o.client_order_id for o in again] == [leg.client_order_id for leg in request.legs]
    posts = [r for r in sim.requests if r[0] == "POST" and r[1] == "/transactional/v1/orders/multileg"]
    assert len(posts) == 1 and sim.acted["place_multileg"] == 1 and sim.duplicate_tags == []
    assert posts[0][2]["order_identifier"] == order_identifier(group)  # the tag comes from the group id
    await fresh.close()


async def test_dropped_cancel_reply_is_not_resent_by_the_http_client(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    """aiohttp re-sends a DELETE/PUT on its own when a kept-alive connection drops; we must not."""
    price = resting_limit(sim, clock, IDEA)
    placed = await broker.place(req("rn-cxl-drop", order_type=OrderType.LIMIT, price=price))
    sim.faults = FaultPlan.parse("drop=1,only=cancel")
    with pytest.raises(OutcomeUnknown):
        await broker.cancel(placed)
    deletes = [r for r in sim.requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and sim.acted["cancel"] == 1
    sim.faults = FaultPlan()
    clock.advance(1)
    assert (await broker.get_order_by_broker_id(placed.broker_order_id or "")).status is OrderStatus.CANCELLED


async def test_four_legs_are_refused_before_sending(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    base = spread("rn-ml-4", sim, clock, marketable=False).legs
    extra = (req("rn-ml-4-l3", inst=FUT_NEAR, qty=75), req("rn-ml-4-l4", inst=FUT_FAR, qty=75))
    before = len(sim.requests)
    with pytest.raises(Rejected):
        await broker.place_multileg(MultilegRequest("rn-ml-4", base + extra))
    assert len(sim.requests) == before


# -- faults --------------------------------------------------------------------------------------------


async def test_dropped_reply_is_resolved_by_lookup_not_by_resending(clock: VirtualClock) -> None:
    faults = FaultPlan.parse("drop=1,only=place")
    async with start(clock=clock, master=MASTER, engine=engine(), faults=faults) as sim:
        b = create(sim.account("odin1"), master=MASTER)
        placed = await b.place(req("rn-drop-1"))  # the reply was lost; the adapter read the book
        assert placed.client_order_id == "rn-drop-1" and placed.status is OrderStatus.FILLED
        assert sim.acted["place"] == 1 and sim.duplicate_tags == []
        again = await b.place(req("rn-drop-1"))  # same id again: found, not sent
        assert again.broker_order_id == placed.broker_order_id and sim.acted["place"] == 1
        await b.close()


async def test_rate_limit_surfaces_at_once_for_writes_and_reads(clock: VirtualClock) -> None:
    async with start(
        clock=clock, master=MASTER, engine=engine(), faults=FaultPlan.parse("429=1,only=place+orders")
    ) as sim:
        b = create(sim.account("odin1"), master=MASTER)
        with pytest.raises(RateLimited):
            await b.place(req("rn-429-1"))
        assert "place" not in sim.acted
        before = len(sim.requests)
        with pytest.raises(RateLimited):  # no retry loop inside: the gateway backs off
            await b.orders()
        assert len(sim.requests) == before + 1
        sim.faults.probabilities.clear()
        assert await b.get_order("rn-429-1") is None
        await b.close()


async def test_faults_on_never_duplicate_orders(clock: VirtualClock) -> None:
    """Place N orders through drop/reset/5xx/429 faults; resolve every ambiguity by lookup, re-place only
    what the broker certainly does not have. Every intent ends up exactly once at the broker."""
    faults = FaultPlan.parse("drop=0.2,reset=0.1,5xx=0.1,429=0.1,seed=11")
    async with start(clock=clock, master=MASTER, engine=engine(), faults=faults) as sim:
        b = create(sim.account("odin1", rate_limit={"orders_per_second": 1000, "burst": 10}), master=MASTER)
        ambiguous = 0
        for i in range(25):
            cid = f"rn-fault-{i}"
            for _ in range(20):
                try:
                    await b.place(req(cid))
                    break
                except OutcomeUnknown:
                    ambiguous += 1
                    if await b.get_order(cid) is not None:
                        break
                except RateLimited:
                    continue
        orders = await b.orders()
        tags = [o.tag for o in orders]
        assert len(tags) == len(set(tags)) == 25
        assert ambiguous > 0 and sim.acted_count() == 25 and sim.duplicate_tags == []
        await b.close()


async def test_mutating_timeout_is_outcome_unknown(clock: VirtualClock) -> None:
    async with start(clock=clock, master=MASTER, engine=engine()) as sim:
        b = create(sim.account("odin1", timeout_seconds=0.05), master=MASTER)
        await b.connect()
        sim.faults.latency = (0.2, 0.2)  # every reply now arrives after the client gave up
        with pytest.raises(OutcomeUnknown):
            await b.place(req("rn-slow-1"))
        await b.close()


async def test_bench_hook_connects_one_adapter_per_account() -> None:
    from runner.brokers.odin.sim_bench import connected

    async with connected(3) as (sim, brokers):
        for i, b in enumerate(brokers):
            await b.place(req(f"rn-bench-{i}", inst=Instrument("NSE", "RELIANCE")))
        assert len(sim.sessions) == 3
        assert [len(await b.orders()) for b in brokers] == [1, 1, 1]


async def test_runner_sim_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    from runner.brokers.odin.sim import serve_forever

    task = asyncio.create_task(serve_forever("127.0.0.1", 0, FaultPlan(), {}))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out.endswith("\n"):
            break
    line = json.loads(out)
    # issue 13 §5: plus `account` and `env` (tests/brokers/test_sim_account.py)
    assert {k: line[k] for k in ("broker", "url", "port")} == {
        "broker": "odin", "url": f"http://127.0.0.1:{line['port']}", "port": line["port"]}
    assert line["account"]["endpoints"]["feed"] == f"ws://127.0.0.1:{line['port']}/"
    assert isinstance(line["port"], int) and line["port"] > 0
    _reader, writer = await asyncio.open_connection("127.0.0.1", line["port"])  # it is listening
    writer.close()
    await writer.wait_closed()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out.count("\n") == 1
