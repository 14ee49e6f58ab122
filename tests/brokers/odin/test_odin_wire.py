"""ODIN pure wire translation: request bodies field for field against fixtures taken from the published
docs / SDK (each fixture names its source in ``_source``), reply parsing, status and error tables."""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner import wirejson
from runner.brokers.instruments import InstrumentMaster, MasterRow, row_from_mapping
from runner.brokers.odin import wire as odin
from runner.errors import NotFound, NotModifiable, RateLimited, Rejected, SessionExpired
from runner.model import (
    Instrument,
    Modification,
    OptionType,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)

FIXTURES = Path(__file__).parent / "fixtures"
MASTER = InstrumentMaster.load(FIXTURES / "master.csv", broker="odin")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(), parse_float=Decimal)
    return data


def wire(body: Any) -> Any:
    """What actually goes on the wire: our serializer, parsed back (numbers as Decimal/int)."""
    return json.loads(wirejson.dumps(body), parse_float=Decimal)


def kind(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int | Decimal):
        return "number"
    return type(v).__name__


def assert_same(ours: Any, theirs: Any, path: str = "") -> None:
    """Field for field: same keys, same JSON types, same values."""
    assert kind(ours) == kind(theirs), f"{path}: {ours!r} vs {theirs!r}"
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), f"{path}: keys {list(ours)} vs {list(theirs)}"
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, f"{path}: {ours!r} vs {theirs!r}"


def row(**fields: str) -> MasterRow:
    return row_from_mapping(fields)


# -- requests ------------------------------------------------------------------------------------------


def test_place_equity_body_matches_sdk_readme() -> None:
    fx = fixture("place_regular_equity.sdk-readme.json")
    request = OrderRequest(
        "rn-equity-000000001",
        Instrument("NSE", "IDEA"),
        Side.BUY,
        1,
        OrderType.LIMIT,
        Product.CNC,
        Validity.DAY,
        price=Decimal("8.59"),
    )
    body = wire(odin.place_body(request, MASTER.resolve(request.instrument)))
    # The README leaves symbol and order_identifier empty; we fill both (symbol is optional, the identifier
    # is how we find the order again). Everything else is the README's body, field for field.
    assert body["scrip_info"].pop("symbol") == "IDEA"
    fx["body"]["scrip_info"].pop("symbol")
    assert body["order_identifier"] == odin.order_identifier("rn-equity-000000001")
    assert len(body["order_identifier"]) <= 10
    body["order_identifier"] = ""
    assert fx["method"] == "POST" and fx["path"] == odin.REGULAR_PATH
    assert_same(body, fx["body"])


def test_place_options_body_matches_sdk_readme_with_strike_in_paise() -> None:
    fx = fixture("place_regular_options.sdk-readme.json")
    inst = Instrument("NFO", "BANKNIFTY", dt.date(2026, 6, 30), Decimal(56000), OptionType.CE)
    request = OrderRequest(
        "rn-opt-1", inst, Side.SELL, 30, OrderType.LIMIT, Product.MIS, price=Decimal("120.00")
    )
    body = wire(odin.place_body(request, MASTER.resolve(inst)))
    abbreviated = {
        "disclosed_quantity",
        "validity_days",
        "is_amo",
        "order_identifier",
        "part_code",
        "algo_id",
        "strategy_id",
        "vender_code",
    }
    assert set(body) - set(fx["body"]) == abbreviated
    assert_same({k: v for k, v in body.items() if k not in abbreviated}, fx["body"])


def test_modify_body_matches_sdk_readme() -> None:
    fx = fixture("modify_regular.sdk-readme.json")
    order = Order(
        "rn-mod",
        "NXHCO00006A4",
        Instrument("NSE", "IDEA"),
        Side.BUY,
        1,
        OrderType.LIMIT,
        Product.CNC,
        OrderStatus.OPEN,
        price=Decimal("8.59"),
    )
    body = odin.modify_body(order, Modification(price=Decimal("9.00")), exchange="NSE_EQ", traded_quantity=0)
    assert odin.order_path("NSE_EQ", "NXHCO00006A4") == fx["path"]
    assert_same(wire(body), fx["body"])


def test_cancel_path_matches_sdk_readme_and_encodes_odd_ids() -> None:
    fx = fixture("cancel_regular.sdk-readme.json")
    assert odin.order_path("NSE_EQ", "NXHCO00006A4") == fx["path"] and fx["body"] is None
    # Ids with '<' / '>' (seen in real replies) must be URI-encoded in the path.
    assert odin.order_path("NSE_EQ", "NWSYF00005>3").endswith("/NWSYF00005%3E3")


def test_place_multileg_body_matches_cloudrestpro_docs() -> None:
    fx = fixture("place_multileg.cloudrestpro-docs.json")
    leg = row(
        exchange="NFO",
        symbol="NIFTY",
        expiry="2026-06-25",
        strike="18000",
        option_type="CE",
        lot_size="50",
        tick_size="0.05",
        token="12345",
    )
    specs = [odin.LegSpec(leg, side, 50, OrderType.LIMIT, Decimal("100.5")) for side in (Side.BUY, Side.SELL)]
    body = odin.multileg_body(
        specs, identifier="ML123", validity=Validity.IOC, opts=odin.WireOptions(strike_in_paise=False)
    )
    assert fx["path"] == odin.MULTILEG_PATH
    assert_same(wire(body), fx["body"])


def test_modify_and_cancel_multileg_match_seed_004() -> None:
    fx = fixture("modify_multileg.seed004.json")
    assert odin.multileg_path("modify", "AAAEE00005") == fx["path"]
    assert odin.multileg_path("cancel", "AAAEE00005") == fx["cancel_path"]
    with pytest.raises(ValueError):
        odin.multileg_path("delete", "AAAEE00005")
    leg = row(
        exchange="NFO",
        symbol="BANKNIFTY",
        expiry="2026-06-25",
        strike="42000",
        option_type="PE",
        lot_size="25",
        tick_size="0.05",
        token="12345",
    )
    opts = odin.WireOptions(strike_in_paise=False, client_id="CL12345")
    spec = odin.LegSpec(leg, Side.SELL, 10, OrderType.LIMIT, Decimal("100.5"))
    assert_same(wire(odin.leg_body(1, spec, opts)), fx["body"]["leg_details"][0])
    # Top-level fields in the documented order; a futures calendar spread is typed SPREAD.
    fut = [
        row(exchange="NFO", symbol="BANKNIFTY", expiry=e, lot_size="25", tick_size="0.05", token=t)
        for e, t in (("2026-06-25", "1"), ("2026-07-30", "2"))
    ]
    body = odin.multileg_body(
        [
            odin.LegSpec(r, s, 25, OrderType.LIMIT, Decimal(1))
            for r, s in zip(fut, (Side.SELL, Side.BUY), strict=True)
        ],
        identifier="MLMOD1",
        validity=Validity.IOC,
        opts=opts,
    )
    assert list(body) == list(fx["body"])
    assert {k: body[k] for k in ("client_id", "type", "order_type", "order_identifier", "validity")} == {
        k: fx["body"][k] for k in ("client_id", "type", "order_type", "order_identifier", "validity")
    }
    assert odin.unwrap(200, fx["reply"])["gateway_order_no"] == "AAAEE00005"


def test_login_body_matches_sdk() -> None:
    fx = fixture("login.sdk-connect.json")
    body = odin.login_body(
        user_id="CL0001",
        password="<password>",
        api_key="<api_key>",
        second_auth="123456",
        second_auth_type="TOTP",
    )
    assert fx["path"] == odin.SESSION_PATH
    assert_same(body, fx["body"])


def test_multileg_shape_rules() -> None:
    ce = Instrument("NFO", "NIFTY", dt.date(2026, 6, 25), Decimal(1), OptionType.CE)
    assert odin.multileg_type([ce, ce]) == "2L" and odin.multileg_type([ce, ce, ce]) == "3L"
    with pytest.raises(Rejected):
        odin.multileg_type([ce] * 4)
    with pytest.raises(Rejected):
        odin.multileg_order_type([OrderType.LIMIT, OrderType.MARKET])
    assert odin.multileg_order_type([OrderType.MARKET] * 2) == "RL-MKT"


def test_identifier_is_short_deterministic_and_distinct() -> None:
    ids = {odin.order_identifier(f"rnabcdefghijklmno{i}") for i in range(1000)}
    assert len(ids) == 1000 and all(len(i) <= 10 for i in ids)
    assert odin.order_identifier("rn-x") == "rn-x"
    assert odin.order_identifier("rnabcdefghijklmnop") == odin.order_identifier("rnabcdefghijklmnop")


def test_decimals_go_out_as_exact_json_numbers() -> None:
    assert (
        wirejson.dumps({"p": Decimal("0.1"), "q": [Decimal("100.50"), 3], "s": "x"})
        == '{"p":0.1,"q":[100.50,3],"s":"x"}'
    )


def test_totp_matches_rfc_6238_vector() -> None:
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # b32("12345678901234567890")
    at = dt.datetime.fromtimestamp(59, dt.UTC)
    assert odin.totp(secret, at, digits=8) == "94287082"


# -- replies -------------------------------------------------------------------------------------------


def test_logged_replies_parse() -> None:
    fx = fixture("replies.sdk-logs.json")
    assert odin.unwrap(200, fx["place_ack"]) == {"orderId": "NXHCO000012<"}
    err = odin.error_from_envelope(400, fx["error_totp"])
    assert isinstance(err, Rejected) and not isinstance(err, NotFound) and err.code == "e-17"
    assert odin.error_from_envelope(400, fx["error_license"]).code == "e-14"
    with pytest.raises(Rejected):
        odin.unwrap(400, fx["error_totp"])
    (book_row,) = odin.unwrap(200, fx["order_book"])
    order = odin.order_from_row(book_row, client_order_id="cid", master=MASTER, tz=IST)
    assert order.status is OrderStatus.REJECTED and order.raw_status == "ADMINREJECT"
    assert order.reject_reason and order.reject_reason.startswith("Only Square Off")
    assert order.instrument.key == "NSE IDEA" and order.broker_order_id == "NXHCO000022<"
    assert (order.order_type, order.product, order.quantity, order.filled_quantity) == (
        OrderType.MARKET,
        Product.MIS,
        1,
        0,
    )
    assert order.price is None and order.tag == "--------z1"
    assert order.updated_at == dt.datetime(2025, 12, 2, 15, 28, 43, tzinfo=IST)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("OMS_XMITTED", OrderStatus.PENDING_NEW),
        ("OMSXMITTED", OrderStatus.PENDING_NEW),
        ("EXCHANGE_XMITTED", OrderStatus.PENDING_NEW),
        ("EXXMITTED", OrderStatus.PENDING_NEW),
        ("PENDING", OrderStatus.OPEN),
        ("AMOACCEPTED", OrderStatus.OPEN),
        ("M.PENDING", OrderStatus.OPEN),
        ("EXECUTED", OrderStatus.FILLED),
        ("CANCELLED", OrderStatus.CANCELLED),
        ("OMS_REJECT", OrderStatus.REJECTED),
        ("ORDER_ERROR", OrderStatus.REJECTED),
        ("ADMIN_REJECT", OrderStatus.REJECTED),
        ("ADMINREJECT", OrderStatus.REJECTED),
        ("executed", OrderStatus.FILLED),
    ],
)
def test_status_table(raw: str, expected: OrderStatus) -> None:
    assert odin.map_status(raw) is expected


def test_partial_fill_and_unknown_status(caplog: pytest.LogCaptureFixture) -> None:
    assert odin.map_status("PENDING", traded=25, total=75) is OrderStatus.PARTIALLY_FILLED
    assert odin.map_status("CANCELLED", traded=25, total=75) is OrderStatus.CANCELLED
    with caplog.at_level(logging.WARNING, logger="runner.brokers.odin"):
        assert odin.map_status("SOMETHING_NEW") is OrderStatus.UNKNOWN
    assert "SOMETHING_NEW" in caplog.text


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, "Order not found NX1<", NotFound),
        (400, "Order cannot be modified in current status", NotModifiable),
        (400, "Only pending multileg orders can be modified or cancelled", NotModifiable),
        (400, "Invalid or expired session token", SessionExpired),
        (401, "whatever", SessionExpired),
        (400, "Too many requests", RateLimited),
        (400, "Insufficient margin", Rejected),
        (403, "Invalid x-api-key", Rejected),
    ],
)
def test_error_mapping(status: int, message: str, error: type[Exception]) -> None:
    err = odin.error_from_envelope(
        status, {"status": "error", "code": "e-101", "message": message, "errors": []}
    )
    assert type(err) is error
    assert odin.error_from_envelope(502, "<html>").code == "502"


def test_position_row_spellings() -> None:
    p = odin.position_from_row(
        {
            "exchange": "NSE_FO",
            "scrip_token": 45001,
            "product_type": "DELIVERY",
            "buy_quantity": 150,
            "sell_quantity": 75,
            "cf_buy_quantity": 0,
            "net_avg_price": "101.25",
        },
        MASTER,
    )
    assert p.instrument.key == "NFO NIFTY 2026-12-29 24500 CE" and p.product is Product.NRML
    assert (p.quantity, p.average_price, p.day_buy_quantity) == (75, Decimal("101.25"), 150)
