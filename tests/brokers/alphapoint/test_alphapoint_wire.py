"""AlphaPoint wire format: pure translation, and request bodies recorded off a real socket compared field
for field with fixtures taken from AlphaPoint's docs / official JS client (each fixture names its source)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.accounts import Account
from runner.brokers.alphapoint.client import AlphaPointBroker, create
from runner.brokers.alphapoint.sim import MASTER_FILE, AlphaPointSim, start
from runner.brokers.alphapoint.wire import (
    Frame,
    api_key_signature,
    ci,
    encode_frame,
    error_from_payload,
    latest_for_client,
    order_from_wire,
    replay_trades,
    status_from_wire,
)
from runner.brokers.paper.price_paths import StepPath
from runner.clock import VirtualClock
from runner.errors import (
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    SessionExpired,
    Unavailable,
)
from runner.ids import numeric_id
from runner.model import Instrument, Modification, OrderRequest, OrderStatus, OrderType, Product, Side

FIXTURES = Path(__file__).parent / "fixtures"
RELIANCE = Instrument("NSE", "RELIANCE")


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(), parse_float=Decimal)
    return data


# -- pure translation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "executed", "status"),
    [
        ("Working", 0, OrderStatus.OPEN),
        ("Working", 3, OrderStatus.PARTIALLY_FILLED),  # APEX has no partial state
        ("FullyExecuted", 5, OrderStatus.FILLED),
        ("Canceled", 2, OrderStatus.CANCELLED),
        ("Rejected", 0, OrderStatus.REJECTED),
        ("Expired", 0, OrderStatus.EXPIRED),
        ("Unknown", 0, OrderStatus.UNKNOWN),
        (5, 5, OrderStatus.FILLED),  # the numeric enum spelling
        ("SomethingNew", 0, OrderStatus.UNKNOWN),  # unknown strings are explicit, never a guess
    ],
)
def test_order_state_table(state: Any, executed: int, status: OrderStatus) -> None:
    assert status_from_wire(state, executed) is status


@pytest.mark.parametrize(
    ("payload", "call", "error", "code"),
    [
        (
            {"result": False, "errormsg": "Not Authorized", "errorcode": 20},
            "GetOpenOrders",
            SessionExpired,
            "20",
        ),
        (
            {"result": False, "errormsg": "Resource Not Found", "errorcode": 104},
            "CancelOrder",
            NotFound,
            "104",
        ),
        ({"result": False, "errormsg": "Server Error", "errorcode": 102}, "SendOrder", OutcomeUnknown, "102"),
        (
            {"result": False, "errormsg": "Server Error", "errorcode": 102},
            "GetOrderStatus",
            Unavailable,
            "102",
        ),
        ({"result": False, "errormsg": "Invalid Request", "errorcode": 100}, "ModifyOrder", Rejected, "100"),
        ({"result": False, "errormsg": "Operation Not Supported", "errorcode": 106}, "X", Rejected, "106"),
        (
            {
                "result": False,
                "errormsg": "Operation Failed",
                "errorcode": 101,
                "detail": "Rate limit exceeded",
            },
            "SendOrder",
            RateLimited,
            "101",
        ),
    ],
)
def test_error_envelope_mapping(payload: dict[str, Any], call: str, error: type, code: str) -> None:
    exc = error_from_payload(payload, call=call)
    assert type(exc) is error and exc.code == code and exc.broker == "alphapoint"


def test_decimals_travel_as_exact_json_numbers() -> None:
    body = {"LimitPrice": Decimal("24500.05"), "Quantity": 75, "Stop": Decimal("100.00"), "B": False}
    raw = encode_frame(0, 2, "SendOrder", body)
    assert json.loads(raw)["o"] == '{"LimitPrice":24500.05,"Quantity":75,"Stop":100.00,"B":false}'
    assert Frame.parse(raw).o["LimitPrice"] == Decimal("24500.05")


def test_frame_envelope_matches_the_official_client() -> None:
    doc = fixture("frame_envelope.json")["frame"]
    ours = json.loads(encode_frame(0, 0, "GetOrderStatus", {"OMSId": 1, "AccountId": 7, "OrderId": 6562}))
    assert ours == doc  # o is a JSON *string*, exactly JSON.stringify's output
    parsed = Frame.parse(json.dumps(doc))
    assert (parsed.m, parsed.i, parsed.n, parsed.o) == (
        0,
        0,
        "GetOrderStatus",
        {"OMSId": 1, "AccountId": 7, "OrderId": 6562},
    )


def test_api_key_signature_is_hmac_sha256_of_nonce_userid_apikey() -> None:
    sig = api_key_signature("s3cret", "2247733562", "96", "28c68ac3fcfafc3d4e8d653fe57e5baf")
    expected = hmac.new(
        b"s3cret", b"2247733562" + b"96" + b"28c68ac3fcfafc3d4e8d653fe57e5baf", hashlib.sha256
    ).hexdigest()
    assert sig == expected and len(sig) == 64


def test_order_object_from_docs_translates() -> None:
    # GetOrderStatus response example (VulcanXOffical/API-Docs trading_getorderstatus.md, APEX-based venue).
    record = {
        "Side": "Buy",
        "OrderId": 6562,
        "Price": Decimal("23436.0"),
        "Quantity": Decimal("2.0"),
        "Instrument": 1,
        "Account": 7,
        "OrderType": "Limit",
        "ClientOrderId": numeric_id("rn-doc"),
        "OrderState": "Working",
        "ReceiveTime": 1680020672485,
        "LastUpdatedTime": 1680020672485,
        "OrigQuantity": Decimal("3.0"),
        "QuantityExecuted": Decimal("1.0"),
        "AvgPrice": Decimal("23436.0"),
        "ChangeReason": "Trade",
        "RejectReason": "",
        "StopPrice": Decimal("0.0"),
    }
    order = order_from_wire(
        record,
        instrument_of=lambda _i: RELIANCE,
        client_id_of=lambda _n: "rn-doc",
        product_of=lambda _c: Product.MIS,
    )
    assert (order.status, order.quantity, order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 3, 1)
    assert (order.price, order.average_price, order.trigger_price) == (Decimal(23436), Decimal(23436), None)
    assert order.updated_at == dt.datetime(2023, 3, 28, 16, 24, 32, 485000, tzinfo=dt.UTC)
    # Reply keys are case-insensitive (positions and auth replies use camelCase).
    assert ci({"omsId": 1})["omsid"] == 1


def test_latest_incarnation_wins_after_cancel_replace() -> None:
    recs = [
        {"OrderId": 7, "ClientOrderId": 5, "OrderState": "Canceled"},
        {"OrderId": 9, "ClientOrderId": 5, "OrderState": "Working"},
        {"OrderId": 8, "ClientOrderId": 6, "OrderState": "Working"},
    ]
    assert latest_for_client(recs, 5) == recs[1]
    assert latest_for_client(recs, 4) is None


def test_replay_trades_gives_average_and_realized() -> None:
    trades = [
        {
            "TradeId": 3,
            "InstrumentId": 9,
            "Side": "Sell",
            "Quantity": 2,
            "Price": Decimal(110),
            "TradeTimeMS": 3,
        },
        {
            "TradeId": 1,
            "InstrumentId": 9,
            "Side": "Buy",
            "Quantity": 2,
            "Price": Decimal(100),
            "TradeTimeMS": 1,
        },
        {
            "TradeId": 2,
            "InstrumentId": 9,
            "Side": "Buy",
            "Quantity": 2,
            "Price": Decimal(104),
            "TradeTimeMS": 2,
        },
    ]
    assert replay_trades(trades)[9] == (Decimal(102), Decimal(16), 4, 2)  # avg cost of the 2 left


# -- recorded wire ----------------------------------------------------------------------------------------


@pytest.fixture
async def wired(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[AlphaPointSim, AlphaPointBroker]]:
    monkeypatch.setenv("AP_USER", "trader")
    monkeypatch.setenv("AP_PASS", "trader-pass")
    prices = StepPath()
    prices.set(RELIANCE, Decimal(31000), 0)
    clock = VirtualClock(dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC))
    async with start(clock=clock.now, prices=prices) as sim:
        acc = Account(
            name="ap",
            broker="alphapoint",
            endpoints={"ws": sim.url},
            credentials={"username": {"env": "AP_USER"}, "password": {"env": "AP_PASS"}},
            instruments=str(MASTER_FILE),
            options={"peg_price_type": "Ask"},
        )  # the docs' examples peg to Ask (3)
        broker = create(acc)
        yield sim, broker
        await broker.close()


def recorded(sim: AlphaPointSim, name: str) -> list[dict[str, Any]]:
    return [p for n, p in sim.received if n == name]


def assert_matches(ours: dict[str, Any], doc_name: str, **expected_differences: Any) -> None:
    """Same keys, same spelling (JSON key order carries no meaning); equal values except where stated,
    and then equal to what the test expects."""
    doc = fixture(doc_name)
    assert sorted(ours) == sorted(doc["request"]), doc["source"]
    assert set(expected_differences) <= set(doc["ours_differ"]) | {"*"}
    for key, value in doc["request"].items():
        want = expected_differences.get(key, value)
        assert ours[key] == want and type(ours[key]) is not float, (key, ours[key], want)


async def test_recorded_send_order_limit_and_market(wired: tuple[AlphaPointSim, AlphaPointBroker]) -> None:
    sim, broker = wired
    await broker.place(
        OrderRequest("rn-wire-l", RELIANCE, Side.BUY, 1, OrderType.LIMIT, price=Decimal(31000))
    )
    await broker.place(OrderRequest("rn-wire-m", RELIANCE, Side.BUY, 1))
    limit_body, market_body = recorded(sim, "SendOrder")
    assert_matches(limit_body, "sendorder_limit.json", ClientOrderId=numeric_id("rn-wire-l"))
    assert_matches(market_body, "sendorder_market.json", ClientOrderId=numeric_id("rn-wire-m"), Quantity=1)


async def test_recorded_cancel_modify_replace(wired: tuple[AlphaPointSim, AlphaPointBroker]) -> None:
    sim, broker = wired
    placed = await broker.place(
        OrderRequest("rn-w", RELIANCE, Side.BUY, 4, OrderType.LIMIT, price=Decimal(30900))
    )
    oid = int(placed.broker_order_id or 0)
    modified = await broker.modify(placed, Modification(quantity=3))
    assert_matches(recorded(sim, "ModifyOrder")[0], "modifyorder.json", OrderId=oid, Quantity=3)
    replaced = await broker.modify(modified, Modification(price=Decimal("30950.5")))
    body = recorded(sim, "CancelReplaceOrder")[0]
    doc = fixture("cancelreplaceorder.json")["request"]
    assert [k.lower() for k in body] == [k.lower() for k in doc]
    assert body == {
        "OMSId": 1,
        "OrderIdToReplace": oid,
        "ClientOrdId": numeric_id("rn-w"),
        "OrderType": 2,
        "Side": 0,
        "AccountId": 9,
        "InstrumentId": 9,
        "UseDisplayQuantity": False,
        "DisplayQuantity": 0,
        "LimitPrice": Decimal("30950.5"),
        "StopPrice": 0,
        "ReferencePrice": 0,
        "PegPriceType": 3,
        "TimeInForce": 1,
        "OrderIdOCO": 0,
        "Quantity": 3,
    }
    new_id = int(replaced.broker_order_id or 0)
    await broker.cancel(replaced)
    assert_matches(recorded(sim, "CancelOrder")[0], "cancelorder_by_orderid.json", OrderId=new_id)
    assert_matches(recorded(sim, "GetOrderStatus")[-1], "getorderstatus.json", AccountId=9, OrderId=new_id)
    again = await broker.place(
        OrderRequest("rn-w2", RELIANCE, Side.SELL, 1, OrderType.LIMIT, price=Decimal(31100))
    )
    await broker.cancel(again.evolve(broker_order_id=None))
    assert_matches(
        recorded(sim, "CancelOrder")[1],
        "cancelorder_by_clientorderid.json",
        ClientOrderId=numeric_id("rn-w2"),
    )


async def test_recorded_reads_auth_and_subscription(wired: tuple[AlphaPointSim, AlphaPointBroker]) -> None:
    sim, broker = wired
    await broker.get_order("rn-r")
    await broker.positions()
    assert_matches(
        recorded(sim, "AuthenticateUser")[0],
        "authenticateuser_password.json",
        UserName="trader",
        Password="trader-pass",
    )
    assert_matches(recorded(sim, "SubscribeAccountEvents")[0], "subscribeaccountevents.json", AccountId=9)
    assert_matches(
        recorded(sim, "GetOrdersHistory")[0],
        "getordershistory.json",
        AccountId=9,
        ClientOrderId=numeric_id("rn-r"),
    )
    assert_matches(recorded(sim, "GetAccountPositions")[0], "getaccountpositions.json", AccountId=9)


async def test_recorded_api_key_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = fixture("authenticateuser_apikey.json")["request"]
    monkeypatch.setenv("AP_KEY", doc["APIKey"])
    monkeypatch.setenv("AP_SECRET", "apex-secret")
    monkeypatch.setenv("AP_UID", doc["UserId"])
    async with start() as sim:
        acc = Account(
            name="ap",
            broker="alphapoint",
            endpoints={"ws": sim.url},
            instruments=str(MASTER_FILE),
            credentials={
                "api_key": {"env": "AP_KEY"},
                "api_secret": {"env": "AP_SECRET"},
                "user_id": {"env": "AP_UID"},
            },
        )
        broker = create(acc)
        broker.nonce = lambda: doc["Nonce"]
        await broker.connect()
        await broker.close()
        ours = recorded(sim, "AuthenticateUser")[0]
    assert_matches(
        ours,
        "authenticateuser_apikey.json",
        Signature=api_key_signature("apex-secret", doc["Nonce"], doc["UserId"], doc["APIKey"]),
    )
