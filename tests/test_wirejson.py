from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import BrokerError, Malformed
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
    [("24500.50", Decimal("24500.50")), (7, Decimal(7)), ("--", None), ("NA", None), ("", None),
     (None, None), ("abc", None), (True, None), (Decimal("1.5"), Decimal("1.5"))],
)
def test_to_decimal_accepts_broker_spellings(raw: object, expected: Decimal | None) -> None:
    assert to_decimal(raw) == expected


def test_to_int_and_plain() -> None:
    assert to_int("150", "qty") == 150 and to_int("--", "disclosed", default=0) == 0
    assert plain(Decimal("2450.50")) == "2450.5" and plain(Decimal("100.00")) == "100"


# --- to_int: exact or a typed error naming the field, never a truncation or a silent 0 ---------------


@pytest.mark.parametrize("raw", [10, "10", "10.0", " 10 ", Decimal("10.00"), 10.0, "+10", "1e1"])
def test_to_int_is_liberal_in_spelling(raw: object) -> None:
    assert to_int(raw, "qty") == 10


@pytest.mark.parametrize(
    "raw",
    [Decimal("0.5"), "0.5", "10.25", 2.5, "NaN", "nan", "Infinity", "-Infinity", "inf", Decimal("NaN"),
     Decimal("sNaN"), float("nan"), float("inf"), "abc", "1,000", "0x10", True, False, [1], {"a": 1},
     "1e999999999", "9" * 40],
)
def test_to_int_refuses_what_it_cannot_read_exactly(raw: object) -> None:
    with pytest.raises(Malformed) as info:
        to_int(raw, "fldQty", broker="kotak_neo")
    err = info.value
    assert isinstance(err, BrokerError) and err.field == "fldQty" and err.broker == "kotak_neo"
    assert "fldQty" in str(err)


@pytest.mark.parametrize("raw", [None, "", "--", "NA", "null"])
def test_a_missing_quantity_is_an_error_unless_the_call_site_says_what_absence_means(raw: object) -> None:
    with pytest.raises(Malformed, match=r"fldQty.*missing"):
        to_int(raw, "fldQty")
    assert to_int(raw, "dscQty", default=0) == 0


def test_a_default_never_covers_an_unreadable_value() -> None:
    with pytest.raises(Malformed):
        to_int("0.5", "dscQty", default=0)


@given(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
def test_to_int_round_trips_every_integer_spelling(n: int) -> None:
    for raw in (n, str(n), f"{n}.0", f"{n}.000", Decimal(n), Decimal(f"{n}.00")):
        assert to_int(raw, "q") == n


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4).filter(lambda d: d != int(d)))
def test_to_int_never_truncates_a_fraction(d: Decimal) -> None:
    for raw in (d, str(d)):
        with pytest.raises(Malformed):
            to_int(raw, "q")


@given(st.one_of(st.text(max_size=30), st.decimals(), st.floats(), st.integers(), st.none(), st.booleans()))
def test_to_int_is_exact_or_malformed_never_another_error(raw: object) -> None:
    try:
        got = to_int(raw, "q")
    except Malformed:
        return
    assert isinstance(got, int) and not isinstance(got, bool)
    sent = Decimal(raw) if isinstance(raw, float) else Decimal(str(raw).strip())
    assert Decimal(got) == sent  # exactly the value sent


@pytest.mark.parametrize("value", ["NaN", "nan", "Infinity", "-inf", "sNaN", Decimal("NaN"), float("inf")])
def test_to_decimal_reads_non_finite_numbers_as_no_price(value: object) -> None:
    assert to_decimal(value) is None


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                  st.decimals(allow_nan=False, allow_infinity=False, places=2),
                  st.floats(allow_nan=False, allow_infinity=False))
_body = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=20)


def _reference(obj: object) -> str:
    """The one-value-at-a-time form dumps had before its C-encoder fast path: the text must not change."""
    import json

    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _reference(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_reference(v) for v in obj) + "]"
    return json.dumps(obj)


@given(_body)
def test_dumps_text_is_the_same_with_or_without_decimals(body: object) -> None:
    assert dumps(body) == _reference(body)


def test_dumps_still_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError):
        dumps({"a": object()})
