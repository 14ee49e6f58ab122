from decimal import Decimal

import pytest

from runner.wirejson import dumps, loads, plain, to_decimal, to_int


def test_decimals_round_trip_exactly() -> None:
    body = {"price": Decimal("120.05"), "qty": 75, "legs": [{"p": Decimal("0.10")}], "tag": "x"}
    text = dumps(body)
    assert text == '{"price":120.05,"qty":75,"legs":[{"p":0.10}],"tag":"x"}'
    back = loads(text)
    assert back["price"] == Decimal("120.05") and isinstance(back["price"], Decimal)
    assert back["legs"][0]["p"] == Decimal("0.10")


def test_float_artifacts_never_appear() -> None:
    # 0.1 + 0.2 as float is 0.30000000000000004; as Decimal text it stays 0.3
    assert dumps(Decimal("0.1") + Decimal("0.2")) == "0.3"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("24500.50", Decimal("24500.50")),
        (7, Decimal(7)),
        ("--", None),
        ("NA", None),
        ("", None),
        (None, None),
        ("abc", None),
        (True, None),
        (Decimal("1.5"), Decimal("1.5")),
    ],
)
def test_to_decimal_accepts_broker_spellings(raw: object, expected: Decimal | None) -> None:
    assert to_decimal(raw) == expected


def test_to_int_and_plain() -> None:
    assert to_int("150") == 150 and to_int("--", -1) == -1
    assert plain(Decimal("2450.50")) == "2450.5" and plain(Decimal("100.00")) == "100"
