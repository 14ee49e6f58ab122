"""Market-relative prices ``{ltp: "<offset>"}``: offset syntax, exact resolution and tick snapping, and the
validator's messages and hints."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.model import Side
from runner.playbook.checks.doc import AccountNames
from runner.playbook.ltp_offsets import (
    NoReferencePrice,
    Offset,
    PriceRole,
    Unit,
    offset_hint,
    parse_offset,
    resolve,
)
from runner.playbook.validate import playbook_from_report, validate_text

ACCOUNTS = AccountNames(frozenset({"paper"}))
HEAD = """\
version: 1
name: ltp
timezone: Asia/Kolkata
limits: {max_orders_per_run: 10}
instruments:
  ce: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}
steps:
"""


@pytest.mark.parametrize(
    ("text", "amount", "unit", "shown"),
    [
        ("+2%", "2", Unit.PERCENT, "LTP +2%"),
        ("-0.5%", "-0.5", Unit.PERCENT, "LTP -0.5%"),
        ("+1.50", "1.50", Unit.RUPEES, "LTP +1.50"),
        ("-3 ticks", "-3", Unit.TICKS, "LTP -3 ticks"),
        ("-1 tick", "-1", Unit.TICKS, "LTP -1 tick"),
        ("+2ticks", "2", Unit.TICKS, "LTP +2 ticks"),
        ("0", "0", Unit.RUPEES, "LTP"),
        (0, "0", Unit.RUPEES, "LTP"),
    ],
)
def test_offsets_parse(text: str | int, amount: str, unit: Unit, shown: str) -> None:
    off = parse_offset(text)
    assert off == Offset(Decimal(amount), unit)
    assert off.label == shown


@pytest.mark.parametrize("bad", ["2%", "+2 pts", "+1.5 ticks", "1.50", "", "+", "--1%", "+2%%", 5, True])
def test_bad_offsets_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid ltp offset"):
        parse_offset(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("2%", 'write "+2%" or "-2%"'),
        ("1.50", 'write "+1.50" or "-1.50"'),
        ("3 ticks", 'write "+3 ticks" or "-3 ticks"'),
        ("+2 pts", "unknown unit 'pts'"),
        ("+1.5 ticks", "ticks are whole numbers"),
        (Decimal("1.50"), 'quote it with its sign: "+1.50" or "-1.50"'),
        (7, 'quote it with its sign: "+7" or "-7"'),
    ],
)
def test_hints_say_what_to_write(bad: object, hint: str) -> None:
    assert hint in offset_hint(bad)


def test_resolution_is_exact_and_snapped_to_the_passive_side() -> None:
    tick = Decimal("0.05")
    ltp = Decimal("123.45")
    minus1 = parse_offset("-1%")  # 122.2155 exactly
    assert minus1.apply(ltp, tick) == Decimal("122.2155")
    kw = {"tick": tick, "what": "t"}
    assert resolve(minus1, ltp, side=Side.BUY, role=PriceRole.LIMIT, **kw) == Decimal("122.20")
    assert resolve(minus1, ltp, side=Side.SELL, role=PriceRole.LIMIT, **kw) == Decimal("122.25")
    # triggers round away from the market: a BUY stop up, a SELL stop down
    assert resolve(minus1, ltp, side=Side.BUY, role=PriceRole.TRIGGER, **kw) == Decimal("122.25")
    assert resolve(minus1, ltp, side=Side.SELL, role=PriceRole.TRIGGER, **kw) == Decimal("122.20")
    assert resolve(parse_offset("-3 ticks"), ltp, side=Side.BUY, role=PriceRole.LIMIT, **kw) == Decimal(
        "123.30"
    )
    assert resolve(parse_offset("+1.50"), ltp, side=Side.SELL, role=PriceRole.LIMIT, **kw) == Decimal(
        "124.95"
    )
    assert resolve(parse_offset("0"), ltp, side=Side.BUY, role=PriceRole.LIMIT, **kw) == ltp
    # already on the tick: unchanged on both sides
    on_tick = parse_offset("+2%")
    for side in Side:
        assert resolve(on_tick, Decimal(100), side=side, role=PriceRole.LIMIT, **kw) == Decimal("102.00")
    # no tick size given: the default 0.05
    assert resolve(minus1, ltp, tick=None, side=Side.BUY, role=PriceRole.LIMIT, what="t") == Decimal("122.20")


def test_resolution_refuses_no_price_and_non_positive_results() -> None:
    with pytest.raises(NoReferencePrice, match="no last traded price"):
        resolve(parse_offset("-1%"), None, tick=None, side=Side.BUY, role=PriceRole.LIMIT, what="t")
    with pytest.raises(ValueError, match="above zero"):
        resolve(
            parse_offset("-3 ticks"),
            Decimal("0.10"),
            tick=None,
            side=Side.BUY,
            role=PriceRole.LIMIT,
            what="t",
        )


def _errors(body: str) -> list[str]:
    report = validate_text(HEAD + body, "x.yaml", ACCOUNTS)
    return [f"{d.line}:{d.col}: {d.message} | {d.hint}" for d in report.errors]


def test_valid_relative_prices_build_the_model() -> None:
    body = """\
  - {kind: place, id: a, instrument: ce, side: SELL, lots: 1, type: LIMIT, price: {ltp: "+1%"}}
  - {kind: place, id: s, instrument: ce, side: SELL, lots: 1, type: SL, price: {ltp: "-3%"},
     trigger_price: {ltp: "-2%"}}
  - {kind: modify, id: m, order: a, price: {ltp: 0}}
  - {kind: modify, id: c, order: a, chase: {tick: 0.05, every: 5s, max: 3, limit_price: {ltp: "-5 ticks"}}}
"""
    report = validate_text(HEAD + body, "x.yaml", ACCOUNTS)
    assert report.ok, [d.format() for d in report.diagnostics]
    pb = playbook_from_report(report)
    assert pb.steps[0].price.offset == Offset(Decimal(1), Unit.PERCENT)
    assert pb.steps[2].price.offset.label == "LTP"


def test_errors_point_at_the_offset_with_hints() -> None:
    body = """\
  - {kind: place, id: a, instrument: ce, side: SELL, lots: 1, type: LIMIT, price: {ltp: "2%"}}
  - {kind: place, id: b, instrument: ce, side: SELL, lots: 1, type: LIMIT, price: {ltp: "+2 bps"}}
  - {kind: place, id: d, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {last: "-1%"}}
"""
    assert _errors(body) == [
        "8:89: ltp: '2%' is not a valid offset from the last traded price"
        ' | write "+2%" or "-2%": the sign says which way from LTP',
        "9:89: ltp: '+2 bps' is not a valid offset from the last traded price | unknown unit 'bps': use % "
        '(of LTP), ticks, or no unit for rupees, e.g. "-1%", "+0.5%", "+1.50" (rupees), "-3 ticks" or 0',
        "10:82: missing required key 'ltp' | add 'ltp:'",
        "10:83: unknown key 'last' | allowed keys here: ltp",
    ]


def test_semantic_checks_on_relative_prices() -> None:
    body = """\
  - {kind: place, id: a, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-100%"}}
  - {kind: place, id: b, instrument: ce, side: BUY, lots: 1, type: SL, price: {ltp: "+1%"},
     trigger_price: {ltp: "+2%"}}
"""
    assert _errors(body) == [
        '8:88: ltp -100% gives a price of zero or less | a price must stay above zero: e.g. "-5%"',
        "10:21: a BUY SL triggers at or below its price (trigger LTP +2% > price LTP +1%) | None",
    ]
    market = '  - {kind: place, id: c, instrument: ce, side: BUY, lots: 1, price: {ltp: "-1%"}}\n'
    assert _errors(market) == [
        "8:62: a MARKET order must not have a price (not even one relative to LTP)"
        " | remove price, or use type: LIMIT to place a limit at the LTP offset"
    ]
    warn = validate_text(
        HEAD + "  - {kind: place, id: s, instrument: ce, side: SELL, lots: 1, type: SL-M, "
        'trigger_price: {ltp: "+1%"}}\n',
        "x.yaml",
        ACCOUNTS,
    )
    assert warn.ok
    assert [w.message for w in warn.warnings] == [
        "a SELL stop triggered at or above the last traded price (LTP +1%) fires at once"
    ]
