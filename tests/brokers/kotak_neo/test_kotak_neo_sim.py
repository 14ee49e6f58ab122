"""Kotak Neo adapter against its loopback simulator over real sockets: what goes on the wire (compared
with requests recorded from the official SDK), the two-step login and re-login, error mapping, BO/CO
exits, AMO, positions (carry-forward + day), and faults on modify/cancel."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers.primed_fire import record_primed_writes

from runner import errors
from runner.accounts import Account
from runner.brokers.burst import Burst, joined
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo.client import KotakNeo, create
from runner.brokers.kotak_neo.sim import KotakNeoSim, account_for, start
from runner.brokers.kotak_neo.wire import PATH_BO_EXIT, PATH_CANCEL, PATH_CO_EXIT, PATH_PLACE
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.read_back import read_back_after
from runner.clock import VirtualClock
from runner.model import Instrument, Modification, OrderRequest, OrderStatus, OrderType, Product, Side

FIX = Path(__file__).parent / "fixtures"
CSV = str(FIX / "instruments.csv")
MASTER = InstrumentMaster.load(CSV, broker="kotak_neo")
IDEA = MASTER.resolve(Instrument("NSE", "IDEA")).instrument
CE = next(r.instrument for r in MASTER if r.trading_symbol == "NIFTY26DEC24500CE")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST))


@pytest.fixture
def prices(clock: VirtualClock) -> StepPath:
    p = StepPath()
    for row in MASTER:
        p.set(row.instrument, Decimal(100), clock.now() - dt.timedelta(days=3))
    return p


Connect = Callable[..., Awaitable[tuple[KotakNeoSim, KotakNeo]]]


@pytest.fixture
async def connect(clock: VirtualClock, prices: StepPath,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Connect]:
    stack: list[Any] = []
    brokers: list[KotakNeo] = []

    async def make(faults: str | None = None, *, account: dict[str, Any] | None = None,
                   login: bool = True, **sim_kw: Any) -> tuple[KotakNeoSim, KotakNeo]:
        sim_kw.setdefault("retry_after", "0.001")
        cm = start(faults=faults, clock=clock, master=MASTER,
                   engine=MatchingEngine(prices, MatchingConfig()), **sim_kw)
        sim = await cm.__aenter__()
        stack.append(cm)
        acct, env = account_for(sim, "desk", instruments=CSV, orders_per_second=1000, burst=50,
                                **(account or {}))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        broker = create(acct, clock=clock)
        brokers.append(broker)
        if login:
            await broker.connect()
        return sim, broker

    yield make
    for b in brokers:
        await b.close()
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def limit(cid: str, qty: int = 1, price: str = "99", inst: Instrument = IDEA, **kw: Any) -> OrderRequest:
    return OrderRequest(cid, inst, Side.BUY, qty, OrderType.LIMIT, price=Decimal(price), **kw)


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIX / f"sdk_3.0.9_{name}.json").read_text())
    return data


# --- the wire, compared with the SDK's own requests ---------------------------------------------------


def assert_same_headers(seen: Mapping[str, str], sdk: dict[str, Any]) -> None:
    """Every header the SDK sends is sent (session values differ, names and static values must not)."""
    for name, value in sdk["headers"].items():
        if name == "content-type" and sdk["method"] == "GET":
            continue  # the SDK labels bodiless GETs application/json; nothing to label
        assert name in seen, f"{sdk['path']}: missing header {name}"
        if name in ("neo-fin-key", "content-type", "accept"):
            assert seen[name].split(";")[0] == value, name


async def test_wire_matches_sdk_for_login_place_modify_cancel_and_reads(connect: Connect) -> None:
    sim, broker = await connect()
    order = await broker.place(limit("rnabcdefghijklmnop", price="99"))
    await broker.modify(order, Modification(quantity=2, price=Decimal("99.5")))
    await broker.cancel(order)
    await broker.orders()
    await broker.positions()
    await broker.trades()
    seen = {(m, p): h for m, p, h in sim.seen}
    for name in ("totp_login", "totp_validate", "place_limit", "modify", "cancel", "order_history",
                 "order_book", "positions", "trade_book"):
        sdk = recorded(name)
        assert (sdk["method"], sdk["path"]) in seen, name
        assert_same_headers(seen[(sdk["method"], sdk["path"])], sdk)
    bodies = {path: body for path, _, body in sim.requests if body is not None}
    for name, path in (("place_limit", PATH_PLACE), ("cancel", PATH_CANCEL)):
        sdk_body = recorded(name)["body"]["jData"]
        assert set(bodies[path]) == set(sdk_body), name  # field for field
    mine = bodies["/quick/order/vr/modify"]
    assert set(mine) == set(recorded("modify")["body"]["jData"])
    assert (mine["vd"], mine["qt"], mine["pr"], mine["no"]) == ("DAY", "2", "99.5", order.broker_order_id)
    place = bodies[PATH_PLACE]
    assert {k: place[k] for k in ("es", "ts", "pt", "tt", "rt", "pc", "ig", "os", "am", "mp")} == {
        "es": "nse_cm", "ts": "IDEA-EQ", "pt": "L", "tt": "B", "rt": "DAY", "pc": "MIS",
        "ig": "rnabcdefghijklmnop", "os": "NEOTRADEAPI", "am": "NO", "mp": "0"}


# --- login ----------------------------------------------------------------------------------------------


async def test_two_step_login_uses_totp_from_the_secret_and_the_session_base_url(connect: Connect) -> None:
    sim, broker = await connect()
    assert broker.logins == 1
    assert [p for _, p, _ in sim.seen[:2]] == ["/login/1.0/tradeApiLogin", "/login/1.0/tradeApiValidate"]
    assert {s.kind for s in sim.sessions.values()} == {"Trade"}  # the view token was consumed
    assert (await broker.orders()) == []


async def test_wrong_mpin_fails_login_without_leaking_it(connect: Connect) -> None:
    sim, broker = await connect(login=False)
    next(iter(sim.users.values())).mpin = "9999"
    with pytest.raises(errors.Rejected, match="Invalid MPIN") as info:
        await broker.connect()
    assert "2468" not in str(info.value)


async def test_provided_totp_is_accepted_instead_of_a_secret(connect: Connect, clock: VirtualClock,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sim, broker = await connect(login=False)
    user = next(iter(sim.users.values()))
    assert user.totp_secret
    from runner.brokers.kotak_neo.wire import totp
    monkeypatch.setenv("PROVIDED_TOTP", totp(user.totp_secret, clock.now()))
    creds = {k: v for k, v in broker.account.credentials.items() if k != "totp_secret"}
    creds["totp"] = type(next(iter(creds.values())))(env="PROVIDED_TOTP")
    provided = create(Account(**{**broker.account.model_dump(), "credentials": creds}), clock=clock)
    await provided.connect()
    assert provided.logins == 1
    await provided.close()


@pytest.mark.parametrize("style", ["200", "403"])
async def test_expired_session_is_renewed_once(connect: Connect, style: str) -> None:
    sim, broker = await connect(session_error=style)
    placed = await broker.place(limit("rnexp1"))
    sim.expire_sessions()  # Kotak logs API sessions out daily
    assert (await broker.get_order("rnexp1")) is not None
    sim.expire_sessions()
    with pytest.raises(errors.AuthExpired):  # a write is never re-sent by the adapter itself...
        await broker.cancel(placed)
    assert broker.logins == 2 and [op for op, _ in sim.acted] == ["place"]
    await broker.connect()  # ...the engine's gateway logs in and retries it
    await broker.cancel(placed)
    assert broker.logins == 3
    assert [op for op, _ in sim.acted] == ["place", "cancel"]


async def test_session_that_keeps_failing_raises_auth_expired(connect: Connect) -> None:
    _sim, broker = await connect("expire=0s")
    with pytest.raises(errors.AuthExpired):
        await broker.orders()
    assert broker.logins == 2  # the first login, then exactly one more


async def test_daily_relogin_after_the_configured_time(connect: Connect, clock: VirtualClock) -> None:
    _sim, broker = await connect(account={"relogin_at": "08:30"})
    await broker.orders()
    clock.advance(3600)
    await broker.orders()
    assert broker.logins == 1
    clock.advance(23 * 3600)  # next day 11:00 IST, past 08:30
    await broker.orders()
    assert broker.logins == 2


# --- errors ---------------------------------------------------------------------------------------------


async def test_unknown_instrument_fails_before_anything_is_sent(connect: Connect) -> None:
    sim, broker = await connect()
    with pytest.raises(errors.InstrumentUnknown):
        await broker.place(limit("rnunknown", inst=Instrument("NSE", "NOSUCHCO")))
    assert sim.requests == []


async def test_static_ip_rule_is_a_rejection_with_its_code(connect: Connect) -> None:
    sim, broker = await connect(allowed_ips=frozenset({"10.9.9.9"}))
    with pytest.raises(errors.Rejected) as info:
        await broker.place(limit("rnip"))
    assert info.value.code == "100008" and not isinstance(info.value, errors.AuthExpired)
    assert sim.acted == []


async def test_complete_order_cannot_be_modified_or_cancelled(connect: Connect, clock: VirtualClock) -> None:
    _sim, broker = await connect()
    order = await broker.place(OrderRequest("rnmkt", IDEA, Side.BUY, 3))
    clock.advance(1)
    done = await broker.get_order_by_broker_id(order.broker_order_id or "")
    assert done.status is OrderStatus.FILLED and done.raw_status == "complete"
    with pytest.raises(errors.NotModifiable) as info:
        await broker.modify(done, Modification(price=Decimal(101)))
    assert info.value.code == "1021"
    with pytest.raises(errors.NotModifiable):
        await broker.cancel(done)
    with pytest.raises(errors.NotFound):
        await broker.get_order_by_broker_id("260302999999999")


# --- BO / CO exits and AMO ------------------------------------------------------------------------------


async def _place_raw(broker: KotakNeo, cid: str, prod: str, pt: str = "L", pr: str = "99") -> str:
    # The canonical model has no BO/CO product, so such orders (placed from the Neo app, say) are
    # planted with the broker's own wire body, then handled through the adapter like any other.
    body = {"am": "NO", "dq": "0", "es": "nse_cm", "mp": "0", "pc": prod, "pr": pr, "pt": pt, "qt": "4",
            "rt": "DAY", "tp": "0", "ts": "IDEA-EQ", "tt": "B", "ig": cid, "os": "NEOTRADEAPI"}
    reply = await broker._request("POST", PATH_PLACE, mutating=True, jdata=body)
    return str(reply["nOrdNo"])


async def test_bracket_order_is_cancelled_through_bo_exit(connect: Connect, clock: VirtualClock) -> None:
    sim, broker = await connect()
    await _place_raw(broker, "rnbracket", "BO")
    order = await broker.get_order("rnbracket")
    assert order is not None and order.status is OrderStatus.OPEN and order.product is Product.MIS
    await broker.cancel(order)
    assert sim.requests[-1][0] == PATH_BO_EXIT
    clock.advance(1)
    assert (await broker.get_order("rnbracket")).status is OrderStatus.CANCELLED  # type: ignore[union-attr]


async def test_filled_cover_order_exit_squares_off(connect: Connect, clock: VirtualClock) -> None:
    sim, broker = await connect()
    await _place_raw(broker, "rncover", "CO", pt="MKT", pr="0")
    clock.advance(1)
    order = await broker.get_order("rncover")
    assert order is not None and order.status is OrderStatus.FILLED
    await broker.cancel(order)
    assert sim.requests[-1][0] == PATH_CO_EXIT
    clock.advance(1)
    (pos,) = await broker.positions()
    assert pos.quantity == 0 and (pos.day_buy_quantity, pos.day_sell_quantity) == (4, 4)


async def test_regular_cancel_of_a_bracket_order_is_refused_by_the_sim(connect: Connect) -> None:
    _sim, broker = await connect()
    number = await _place_raw(broker, "rnbo2", "BO")
    with pytest.raises(errors.Rejected):
        await broker._request("POST", PATH_CANCEL, mutating=True, jdata={"on": number, "am": "NO"})


async def test_amo_place_modify_cancel_sends_am_and_ts(connect: Connect, clock: VirtualClock) -> None:
    clock.advance(-3 * 3600)  # 07:00 IST, before the open
    sim, broker = await connect(account={"options": {"amo": True}})
    order = await broker.place(limit("rnamo", qty=2))
    assert order.status is OrderStatus.OPEN and order.raw_status == "after market order req received"
    assert sim.requests[-1][2]["am"] == "YES"  # type: ignore[index]
    moved = await broker.modify(order, Modification(price=Decimal("98")))
    assert sim.requests[-1][2]["am"] == "YES"  # type: ignore[index]
    await broker.cancel(moved)
    path, _, body = sim.requests[-1]
    assert path == PATH_CANCEL and body == {"on": order.broker_order_id, "am": "YES", "ts": "IDEA-EQ"}
    assert (await broker.get_order("rnamo")).status is OrderStatus.CANCELLED  # type: ignore[union-attr]


async def test_amo_goes_to_the_exchange_at_the_open(connect: Connect, clock: VirtualClock) -> None:
    clock.advance(-3 * 3600)
    _sim, broker = await connect(account={"options": {"amo": True}})
    await broker.place(OrderRequest("rnamo2", IDEA, Side.BUY, 5))
    clock.advance(2 * 3600 + 16 * 60)  # 09:16
    await broker.orders()
    clock.advance(1)
    order = await broker.get_order("rnamo2")
    assert order is not None and order.status is OrderStatus.FILLED


# --- positions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/portfolio/v2/positions", "/quick/user/positions"])
async def test_positions_net_is_carry_forward_plus_day(connect: Connect, clock: VirtualClock,
                                                      path: str) -> None:
    sim, broker = await connect(account={"options": {}})
    broker._positions_path = path
    await broker.place(OrderRequest("rnday1", CE, Side.BUY, 150, product=Product.NRML))
    clock.advance(1)
    await broker.orders()
    clock.advance(24 * 3600)  # next trading day: yesterday's buy is carried forward
    await broker.place(OrderRequest("rnday2", CE, Side.SELL, 75, product=Product.NRML))
    clock.advance(1)
    (pos,) = await broker.positions()
    assert pos.quantity == 150 - 75
    assert (pos.day_buy_quantity, pos.day_sell_quantity) == (0, 75)
    assert pos.instrument == CE and pos.product is Product.NRML
    assert sim.seen[-1][1] == path


# --- faults on modify / cancel ----------------------------------------------------------------------------


async def test_dropped_cancel_reply_is_outcome_unknown_and_resolved_by_reading_back(
    connect: Connect, clock: VirtualClock
) -> None:
    _sim, broker = await connect("drop=1,only=cancel")
    order = await broker.place(limit("rndrop"))
    with pytest.raises(errors.OutcomeUnknown):
        await broker.cancel(order)
    clock.advance(1)
    back = await broker.get_order_by_broker_id(order.broker_order_id or "")
    assert back.status is OrderStatus.CANCELLED  # the broker did act


async def test_reset_before_modify_is_outcome_unknown_and_nothing_changed(connect: Connect) -> None:
    _sim, broker = await connect("reset=1,only=modify")
    order = await broker.place(limit("rnreset"))
    with pytest.raises(errors.OutcomeUnknown):
        await broker.modify(order, Modification(price=Decimal("98")))
    assert (await broker.get_order("rnreset")).price == Decimal(99)  # type: ignore[union-attr]


async def test_429_on_place_is_rate_limited_and_penalises_the_segment(connect: Connect) -> None:
    sim, broker = await connect("429=1,only=place")
    with pytest.raises(errors.RateLimited) as info:
        await broker.place(limit("rn429"))
    assert info.value.retry_after == pytest.approx(0.001)
    assert sim.acted == [] and (await broker.get_order("rn429")) is None
    assert ("desk", "NSE_CM") in broker.limiter._buckets


async def test_5xx_on_a_read_is_unavailable_after_one_request(connect: Connect) -> None:
    """No retry loop inside the adapter: the engine's gateway retries Retryable errors with backoff."""
    sim, broker = await connect("5xx=1,only=orders")
    await broker.place(limit("rnread"))
    before = len(sim.seen)
    with pytest.raises(errors.Unavailable):
        await broker.orders()
    assert len(sim.seen) - before == 1
    sim.faults.probabilities.clear()
    assert [o.client_order_id for o in await broker.orders()] == ["rnread"]


# --- never the same client id twice ------------------------------------------------------------------


def places_at_sim(sim: KotakNeoSim) -> list[str]:
    return [body["ig"] for path, _, body in sim.requests if path == PATH_PLACE and body]


async def test_sim_accepts_a_repeated_client_id_as_kotak_does(connect: Connect) -> None:
    """Kotak takes a repeated ``ig`` as a second order; so must the sim, or tests would pass because of it."""
    sim, broker = await connect()
    first = await _place_raw(broker, "rnrepeat", "MIS")
    second = await _place_raw(broker, "rnrepeat", "MIS")
    assert first != second and sim.duplicate_places == ["rnrepeat"]
    same = [o for o in await broker.orders() if o.client_order_id == "rnrepeat"]
    assert sorted(o.broker_order_id or "" for o in same) == sorted([first, second])
    assert all(o.status is OrderStatus.OPEN for o in same)


async def test_adapter_never_sends_a_client_id_twice(connect: Connect) -> None:
    sim, broker = await connect()
    first = await broker.place(limit("rnonce"))
    again = await broker.place(limit("rnonce"))  # answered from the broker's book, not sent
    assert again.broker_order_id == first.broker_order_id and again.client_order_id == "rnonce"
    assert places_at_sim(sim) == ["rnonce"] and sim.duplicate_places == []


async def test_concurrent_places_of_one_client_id_send_it_once(connect: Connect) -> None:
    sim, broker = await connect()
    results = await asyncio.gather(broker.place(limit("rnrace")), broker.place(limit("rnrace")),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Order", "Rejected"]
    assert places_at_sim(sim) == ["rnrace"] and sim.duplicate_places == []


async def test_after_outcome_unknown_the_book_is_read_before_any_resend(connect: Connect) -> None:
    sim, broker = await connect("drop=1,only=place")
    with pytest.raises(errors.OutcomeUnknown):  # the broker took it; the reply was lost
        await broker.place(limit("rnlost"))
    sim.faults = FaultPlan()
    found = await broker.place(limit("rnlost"))  # found in the order book: not sent again
    assert found.client_order_id == "rnlost" and found.status is OrderStatus.OPEN
    assert places_at_sim(sim) == ["rnlost"]

    sim.faults = FaultPlan.parse("reset=1,only=place")
    with pytest.raises(errors.OutcomeUnknown):  # the connection died before the broker acted
        await broker.place(limit("rngone"))
    sim.faults = FaultPlan()
    before = len(sim.seen)
    placed = await broker.place(limit("rngone"))  # absent from the book: safe to send
    assert [p for _, p, _ in sim.seen[before:]][:2] == ["/quick/user/orders", PATH_PLACE]
    assert placed.status is OrderStatus.OPEN
    assert [o.client_order_id for o in await broker.orders()].count("rngone") == 1
    assert sim.duplicate_places == []


async def test_runner_sim_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    from runner.brokers.kotak_neo.sim import serve_forever

    task = asyncio.create_task(serve_forever("127.0.0.1", 0, FaultPlan(), {}))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out.endswith("\n"):
            break
    line = json.loads(out)
    # issue 13 §5: plus a ready accounts-file entry and its env (tests/brokers/test_sim_account.py)
    assert set(line) == {"broker", "url", "port", "account", "env"} and line["broker"] == "kotak_neo"
    assert line["url"] == f"http://127.0.0.1:{line['port']}" and line["port"] > 0
    _reader, writer = await asyncio.open_connection("127.0.0.1", line["port"])  # it is listening
    writer.close()
    await writer.wait_closed()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out.count("\n") == 1


@pytest.mark.parametrize("header", ["86400", "inf", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_huge_retry_after_penalises_the_segment_only_up_to_the_cap(connect: Connect,
                                                                          header: str) -> None:
    """Kotak's limiter honours Retry-After, but a day (or garbage) must not block the account's next
    orders (a square-off) for as long."""
    _sim, broker = await connect("429=1,only=place", retry_after=header)
    with pytest.raises(errors.RateLimited):
        await broker.place(limit("rnhuge"))
    assert broker.limiter.blocked_for(("desk", "NSE_CM")) <= broker.limiter.max_penalty + 1


# --- a burst of orders at one instant (runner.brokers.burst, runner.brokers.warm) ----------------------


async def test_a_bursts_orders_all_reach_the_broker_before_any_verify_read(connect: Connect) -> None:
    sim, broker = await connect()
    await broker.warm_connections(2)
    burst = Burst()
    first, second = burst.member(), burst.member()

    async def place_a() -> None:
        with joined(first):
            await broker.place(limit("burst-a"))

    async def place_b() -> None:
        with joined(second):
            while "burst-a" not in broker._placed:  # leaves only once the first one's ack is back
                await asyncio.sleep(0)
            await broker.place(limit("burst-b"))

    await asyncio.gather(place_a(), place_b())
    trade = [path for _, path, _ in sim.seen if path.startswith("/quick/")]
    places = [i for i, path in enumerate(trade) if path == PATH_PLACE]
    reads = [i for i, path in enumerate(trade) if path != PATH_PLACE]
    assert len(places) == 2 and len(reads) == 2, trade
    assert max(places) < min(reads), trade  # the first order's verify read waited for the second to go
    assert set(sim.arrivals) == {"burst-a", "burst-b"}  # when each reached the broker, for benches


async def test_outside_a_burst_the_verify_read_follows_the_ack(connect: Connect) -> None:
    sim, broker = await connect()
    order = await broker.place(limit("alone"))
    assert order.broker_order_id is not None
    trade = [path for _, path, _ in sim.seen if path.startswith("/quick/")]
    assert trade[0] == PATH_PLACE and len(trade) == 2, trade  # the place, then its verify read



async def test_in_a_read_back_batch_the_place_returns_the_ack_and_counts_it(connect: Connect) -> None:
    """The caller reads its batch back in one day-book read (runner.brokers.read_back): no verify read per
    order, the ack is not an open order (PENDING_NEW), and the batch says the caller must read it."""
    sim, broker = await connect()
    with read_back_after() as batch:
        first = await broker.place(limit("batch-a"))
        second = await broker.place(limit("batch-b"))
    assert batch.deferred == 2
    assert first.status is second.status is OrderStatus.PENDING_NEW and first.broker_order_id
    trade = [path for _, path, _ in sim.seen if path.startswith("/quick/")]
    assert trade == [PATH_PLACE, PATH_PLACE], trade
    outside = await broker.place(limit("after"))  # the batch is over: read back as before
    assert outside.status is OrderStatus.OPEN
    assert len([p for _, p, _ in sim.seen if p.startswith("/quick/")]) == 4


async def test_open_orders_and_orders_of_parse_only_the_rows_they_return(
        connect: Connect, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """By the close the book is mostly finished rows: open_orders skips rows whose own status is final
    before parsing, orders_of (runner.brokers.selected_orders) parses only the ids asked for."""
    import runner.brokers.kotak_neo.client as client

    _, broker = await connect()
    for k in range(4):
        await broker.place(OrderRequest(f"done{k}", IDEA, Side.BUY, 1, OrderType.MARKET))  # filled
    working = await broker.place(limit("working"))
    cancelled = await broker.place(limit("cancelled"))
    await broker.cancel(cancelled)
    parsed: list[str] = []
    original = client.parse_order

    def counting(row: Any, *args: Any, **kw: Any) -> Any:
        parsed.append(str(row.get("GuiOrdId")))
        return original(row, *args, **kw)

    monkeypatch.setattr(client, "parse_order", counting)
    assert [o.client_order_id for o in await broker.open_orders()] == [working.client_order_id]
    assert parsed == ["working"]
    parsed.clear()
    picked = await broker.orders_of({"done1", "cancelled"})
    assert {o.client_order_id for o in picked} == {"done1", "cancelled"}
    assert sorted(parsed) == ["cancelled", "done1"]
    parsed.clear()
    assert len(await broker.orders()) == 6 and len(parsed) == 6  # the whole book, as before

# --- primed place (runner.brokers.primed): built and connected while preparing, only written at the instant


async def test_a_primed_place_goes_out_as_the_ordinary_one_would(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = record_primed_writes(monkeypatch)
    sim, broker = await connect()
    await broker.place(limit("rnordinary000000", price="99"))
    await broker.prime(limit("rnprimed00000000", price="99"))
    assert written == [] and sim.requests[-1][2]["ig"] == "rnordinary000000"  # type: ignore[index]
    order = await broker.place(limit("rnprimed00000000", price="99"))
    assert len(written) == 1 and written[0].endswith(PATH_PLACE)
    assert order.client_order_id == "rnprimed00000000" and order.broker_order_id
    assert places_at_sim(sim) == ["rnordinary000000", "rnprimed00000000"]  # each once
    ordinary, primed = [(h, b) for (_, p, h), (_, _, b) in zip(
        [s for s in sim.seen if s[1] == PATH_PLACE], [r for r in sim.requests if r[0] == PATH_PLACE],
        strict=True)]
    assert {k: v for k, v in ordinary[1].items() if k != "ig"} == {  # type: ignore[union-attr]
        k: v for k, v in primed[1].items() if k != "ig"}  # type: ignore[union-attr]
    drop = {"host", "content-length", "user-agent", "accept-encoding", "connection"}
    assert {k.lower() for k in ordinary[0]} - drop == {k.lower() for k in primed[0]} - drop


async def test_a_primed_place_not_matching_the_request_or_closed_is_sent_the_ordinary_way(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = record_primed_writes(monkeypatch)
    sim, broker = await connect()
    await broker.prime(limit("rnchanged0000000", price="99"))
    await broker.place(limit("rnchanged0000000", price="98"))  # not what was primed: built afresh
    await broker.prime(limit("rnclosed00000000", price="99"))
    broker._primed["rnclosed00000000"][2].close()  # e.g. the server dropped the idle connection
    await broker.place(limit("rnclosed00000000", price="99"))
    assert written == [] and broker._primed == {}
    assert places_at_sim(sim) == ["rnchanged0000000", "rnclosed00000000"]
    assert sim.requests[0][2]["pr"] == "98"  # type: ignore[index]


async def test_a_primed_place_whose_reply_is_lost_is_unknown_never_resent(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.brokers.primed import PrimedRequest

    _sim, broker = await connect()
    await broker.prime(limit("rnlostreply00000", price="99"))

    async def lost(self: PrimedRequest) -> Any:
        raise ConnectionResetError("reset after the request was written")

    monkeypatch.setattr(PrimedRequest, "_reply", lost)
    with pytest.raises(errors.OutcomeUnknown):
        await broker.place(limit("rnlostreply00000", price="99"))
    # written, reply lost: the outcome is for a lookup to settle (as on the ordinary path), never a re-send
    assert "rnlostreply00000" in broker._unresolved and broker._primed == {}


async def test_a_primed_request_written_ahead_is_placed_once_and_its_place_reads_the_reply(
    connect: Connect,
) -> None:
    sim, broker = await connect()
    request = limit("rnwrittenahead00", price="99")
    assert not broker.write_primed(request)  # nothing primed: the ordinary path
    await broker.prime(request)
    assert not broker.write_primed(limit("rnwrittenahead00", price="98"))  # not what was primed
    assert broker.write_primed(request)
    assert not broker.write_primed(request)  # once
    order = await broker.place(request)
    assert order.client_order_id == "rnwrittenahead00" and order.broker_order_id
    assert places_at_sim(sim) == ["rnwrittenahead00"] and broker._primed == {}


async def test_a_primed_request_is_not_written_ahead_without_a_free_rate_limit_token(
    connect: Connect,
) -> None:
    sim, broker = await connect()
    request = limit("rnsecond00000000")
    await broker.prime(request)
    broker.limiter.penalize(broker._limit_key("nse_cm"), 0.05)  # no token for 50 ms
    assert not broker.write_primed(request)  # its place waits for the token, as ever
    await broker.place(request)
    assert places_at_sim(sim) == ["rnsecond00000000"]


async def test_concurrent_verify_reads_of_one_account_share_book_reads(connect: Connect) -> None:
    """Kotak has no lookup by client id: each verify reads the whole book. Twenty at once cost at most
    two book reads, and each finds its own order (every read began after its caller asked)."""
    sim, broker = await connect()
    cids = [f"rnshared{i:02d}" for i in range(20)]
    for cid in cids:
        await broker.place(limit(cid))
    before = sum(1 for method, path, _ in sim.seen if method == "GET" and "orders" in path.lower())
    found = await asyncio.gather(*(broker.get_order(cid) for cid in cids))
    reads = sum(1 for method, path, _ in sim.seen if method == "GET" and "orders" in path.lower()) - before
    assert [o.client_order_id if o is not None else None for o in found] == cids
    assert 1 <= reads <= 2, reads
