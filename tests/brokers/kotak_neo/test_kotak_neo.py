"""Kotak Neo pure translation: TOTP, jData bodies against bodies recorded from the official SDK and the
seed, order-book / history / positions / trades parsing of the published samples, status and error tables."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import errors
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo import wire as kn
from runner.model import (
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)

FIX = Path(__file__).parent / "fixtures"
MASTER = InstrumentMaster.load(FIX / "instruments.csv", broker="kotak_neo")
IDEA = Instrument("NSE", "IDEA")
RELIANCE = Instrument("NSE", "RELIANCE")



def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIX / name).read_text())
    return data


# --- TOTP -------------------------------------------------------------------------------------------
RFC6238_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of b"12345678901234567890" (RFC 6238 App. B)


@pytest.mark.parametrize(("t", "expected"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_totp_matches_rfc6238_sha1_vectors(t: int, expected: str) -> None:
    assert kn.totp(RFC6238_SECRET, t, digits=8) == expected


def test_totp_accepts_authenticator_style_secrets_and_datetimes() -> None:
    at = dt.datetime.fromtimestamp(59, dt.UTC)
    grouped = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq"
    assert kn.totp(grouped, at) == "287082"  # 6-digit form of the same code
    with pytest.raises(ValueError, match="base32"):
        kn.totp("not base32 !!", 59)


# --- request bodies, field for field against the SDK recordings -----------------------------------------


def _recorded(name: str) -> dict[str, str]:
    rec = fixture(f"sdk_3.0.9_{name}.json")
    assert rec["body"]["form_fields"] == ["jData"]
    body: dict[str, str] = rec["body"]["jData"]
    return body


def test_place_limit_equity_matches_sdk() -> None:
    req = OrderRequest("rnabcdefghijklmnop", IDEA, Side.BUY, 1, OrderType.LIMIT, Product.MIS,
                       price=Decimal("9.39"))
    assert kn.place_jdata(req, MASTER.resolve(IDEA)) == _recorded("place_limit")


def test_place_market_option_ioc_matches_sdk() -> None:
    ce = next(r.instrument for r in MASTER if r.trading_symbol == "NIFTY26DEC24500CE")
    req = OrderRequest("rnqrstuvwxyz234567", ce, Side.SELL, 75, OrderType.MARKET, Product.NRML, Validity.IOC)
    assert kn.place_jdata(req, MASTER.resolve(ce)) == _recorded("place_market_fo")


def test_place_stop_limit_matches_sdk() -> None:
    req = OrderRequest("rnslslslslslslslsl", RELIANCE, Side.SELL, 10, OrderType.SL, Product.CNC,
                       price=Decimal("2450.50"), trigger_price=Decimal("2455.00"))
    assert kn.place_jdata(req, MASTER.resolve(RELIANCE)) == _recorded("place_sl")


def _open_order(**kw: Any) -> Order:
    base: dict[str, Any] = dict(client_order_id="rnx", broker_order_id="250122000612876", instrument=IDEA,
                                side=Side.BUY, quantity=1, order_type=OrderType.LIMIT, product=Product.MIS,
                                status=OrderStatus.OPEN, price=Decimal("9.39"))
    base.update(kw)
    return Order(**base)


def test_modify_uses_vd_not_rt_and_matches_sdk() -> None:
    body = kn.modify_jdata(_open_order(), Modification(quantity=2, price=Decimal("9.45")))
    assert body == _recorded("modify")
    assert "vd" in body and "rt" not in body


def test_modify_to_market_zeroes_price_and_keeps_unchanged_fields() -> None:
    body = kn.modify_jdata(_open_order(quantity=5), Modification(order_type=OrderType.MARKET))
    assert (body["pt"], body["pr"], body["qt"], body["tp"]) == ("MKT", "0", "5", "0")


def test_cancel_matches_sdk_and_seed_including_amo_and_exit_paths() -> None:
    assert kn.cancel_jdata("250122000612876") == _recorded("cancel")
    seed = fixture("seed001_cancel_exit_amo.json")
    by_name = {c["name"]: c for c in seed["cases"]}
    assert kn.cancel_jdata("210519970309199") == by_name["regular"]["jData"]
    assert kn.cancel_jdata("210519970309199", amo=True, trading_symbol="TCS-EQ") == by_name["amo"]["jData"]
    assert kn.cancel_path("BO") == by_name["bracket_exit"]["path"]
    assert kn.cancel_path("CO") == by_name["cover_exit"]["path"]
    assert kn.cancel_path("MIS") == by_name["regular"]["path"]
    with pytest.raises(ValueError, match="trading symbol"):
        kn.cancel_jdata("1", amo=True)


def test_unknown_instrument_fails_before_any_body_is_built() -> None:
    with pytest.raises(errors.InstrumentUnknown):
        MASTER.resolve(Instrument("NSE", "NOSUCH"))


# --- responses -------------------------------------------------------------------------------------------


def test_order_book_sample_parses() -> None:
    rows = kn.rows_of(fixture("docs_order_report_row.json")["payload"])
    order = kn.parse_order(rows[0])
    assert order.broker_order_id == "250122000612876"
    assert order.status is OrderStatus.OPEN and order.raw_status == "open"
    assert (order.side, order.order_type, order.product, order.quantity) == (Side.BUY, OrderType.LIMIT,
                                                                           Product.NRML, 1)
    assert order.price == Decimal("9.39") and order.trigger_price is None and order.average_price is None
    assert order.instrument == Instrument("NSE", "IDEA-EQ")  # no master: trading symbol as-is
    assert order.updated_at == dt.datetime.fromtimestamp(1737536281, dt.UTC).replace(microsecond=933015)


def test_history_picks_latest_state_and_reads_history_spellings() -> None:
    rows = kn.rows_of(fixture("docs_order_history.json")["payload"])
    assert [r["ordSt"] for r in rows][-1] == "put order req received"
    latest = kn.parse_order(kn.latest_row(rows))
    assert latest.status is OrderStatus.FILLED and latest.filled_quantity == 1
    assert latest.average_price == Decimal("9.39") and latest.validity is Validity.DAY
    statuses = [kn.parse_order(r).status for r in rows]
    assert statuses == [OrderStatus.FILLED, OrderStatus.OPEN] + [OrderStatus.PENDING_NEW] * 3


def test_positions_sample_net_and_average_match_the_sdk_computation() -> None:
    row = kn.rows_of(fixture("docs_positions.json")["payload"])[0]
    pos = kn.parse_position(row)
    assert pos.quantity == row["netQty"] == 225
    assert pos.average_price == Decimal(str(row["averagePrice"])).quantize(Decimal("0.01"))
    assert (pos.day_buy_quantity, pos.day_sell_quantity, pos.product) == (225, 0, Product.NRML)


def test_position_net_is_carry_forward_plus_day() -> None:
    row = {"exSeg": "nse_fo", "trdSym": "X", "prod": "NRML", "cfBuyQty": "150", "cfSellQty": "0",
           "flBuyQty": "75", "flSellQty": "300", "cfBuyAmt": "15000.00", "buyAmt": "7650.00",
           "sellAmt": "31500.00", "cfSellAmt": "0.00", "multiplier": "1", "precision": "2"}
    pos = kn.parse_position(row)
    assert pos.quantity == (150 + 75) - (0 + 300) == -75
    assert pos.average_price == Decimal("105.00")  # short: sell side 31500 / 300
    assert pos.realized_pnl == Decimal("975.00")  # (105 - 22650/225) x 225 closed


def test_trade_report_sample_parses() -> None:
    fill = kn.parse_fill(kn.rows_of(fixture("docs_trade_report.json")["payload"])[0])
    assert (fill.quantity, fill.price, fill.trade_id) == (1, Decimal("9.39"), "207983744")
    assert fill.side is Side.BUY
    assert fill.at == dt.datetime(2025, 1, 22, 8, 58, 16, tzinfo=dt.UTC)


# --- status and error tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "filled", "qty", "expected"), [
    ("put order req received", 0, 10, OrderStatus.PENDING_NEW),
    ("validation pending", 0, 10, OrderStatus.PENDING_NEW),
    ("open pending", 0, 10, OrderStatus.PENDING_NEW),
    ("open", 0, 10, OrderStatus.OPEN),
    ("open", 4, 10, OrderStatus.PARTIALLY_FILLED),
    ("OPEN", 0, 10, OrderStatus.OPEN),
    ("trigger pending", 0, 10, OrderStatus.OPEN),
    ("after market order req received", 0, 10, OrderStatus.OPEN),
    ("modified", 0, 10, OrderStatus.OPEN),
    ("cancel pending", 0, 10, OrderStatus.PENDING_CANCEL),
    ("complete", 10, 10, OrderStatus.FILLED),
    ("traded", 10, 10, OrderStatus.FILLED),
    ("rejected", 0, 10, OrderStatus.REJECTED),
    ("cancelled", 3, 10, OrderStatus.CANCELLED),
    ("lapsed", 0, 10, OrderStatus.EXPIRED),
])
def test_known_statuses(raw: str, filled: int, qty: int, expected: OrderStatus) -> None:
    assert kn.map_status(raw, filled, qty) is expected


def test_unknown_status_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="runner.brokers.kotak_neo"):
        assert kn.map_status("freshly invented state", 0, 5) is OrderStatus.OPEN
        assert kn.map_status("freshly invented state", 2, 5) is OrderStatus.PARTIALLY_FILLED
    assert "freshly invented state" in caplog.text
    assert kn.map_status("another invented state", 0, 5, policy="unknown") is OrderStatus.UNKNOWN


@pytest.mark.parametrize("case", fixture("docs_errors.json")["cases"], ids=lambda c: str(c["code"]))
def test_error_envelopes(case: dict[str, Any]) -> None:
    err = kn.error_for(case["payload"], case["http"])
    if case["error"] is None:
        assert err is None
        return
    assert type(err) is getattr(errors, case["error"])
    assert err is not None and err.code == case["code"] and err.broker == "kotak_neo"


def test_login_reply_parsing() -> None:
    step = kn.parse_login({"data": {"token": "t", "sid": "s", "baseUrl": "https://e21.kotaksecurities.com",
                                    "kType": "Trade"}}, 200)
    assert (step.token, step.sid, step.base_url, step.kind) == ("t", "s", "https://e21.kotaksecurities.com",
                                                                "Trade")
    with pytest.raises(errors.Rejected, match="Missing required field 'Mpin'"):
        kn.parse_login({"error": [{"code": "400", "message": "Missing required field 'Mpin'"}]}, 400)
    with pytest.raises(errors.Rejected):  # a 2xx without data is still a failed login (SDK totp.py)
        kn.parse_login({"stat": "Not_Ok"}, 200)


def test_reply_numbers_are_parsed_as_decimal_never_through_float() -> None:
    # 17 significant digits: a float would come back as 2450.1234567890124 (or worse).
    body = (b'{"stat":"Ok","stCode":200,"data":[{"nOrdNo":"1","GuiOrdId":"rnx","ordSt":"complete",'
            b'"prcTp":"L","trnsTp":"B","prod":"NRML","qty":75,"fldQty":75,"prc":2450.12345678901234,'
            b'"avgPrc":2450.12345678901234,"exSeg":"nse_fo","trdSym":"NIFTY"}]}')
    payload = kn._json(httpx.Response(200, content=body))
    (order,) = [kn.parse_order(r) for r in kn.rows_of(payload)]
    assert order.average_price == Decimal("2450.12345678901234")
    assert order.price == Decimal("2450.12345678901234") and order.filled_quantity == 75
