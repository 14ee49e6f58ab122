"""Rolling instruments (relative expiry, ATM strikes) and chase in ticks: the syntax through the schema, the
fast checker, the semantic checks and the models, with file:line:col errors and hints; the pure pickers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from runner.playbook.checks.doc import AccountNames
from runner.playbook.models import RollingExpiry
from runner.playbook.rolling import ExpiryKind, RollingUnresolved, parse_atm, pick_expiry, pick_strike
from runner.playbook.validate import playbook_from_report, validate_text

ACCOUNTS = AccountNames(frozenset({"paper"}))
HEAD = """\
version: 1
name: rolling
timezone: Asia/Kolkata
limits: {max_orders_per_run: 10}
instruments:
"""
GOOD = """\
  nifty: {exchange: NSE, symbol: NIFTY}
  fut: {exchange: NFO, symbol: NIFTY, expiry: {nearest: monthly}}
  ce: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm+2, option_type: CE}
  pe: {exchange: NFO, symbol: NIFTY, expiry: {nearest: monthly, offset: 1}, strike: atm-1, option_type: PE,
       underlying: fut}
  gold: {exchange: MCX, symbol: GOLD, expiry: {nearest: monthly}, strike: atm, option_type: CE,
         underlying: {exchange: MCX, symbol: GOLDM}}
  fixed: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}
steps:
  - {kind: place, id: a, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-1%"}}
  - {kind: modify, id: m, order: a, chase: {ticks: 2, every: 5s, max: 3}}
  - {kind: place, id: b, instrument: fixed, side: BUY, lots: 1, type: LIMIT, price: 100}
  - {kind: modify, id: n, order: b, chase: {tick: 0.5, every: 5s, max: 3}}
"""


def errors(text: str) -> list[str]:
    report = validate_text(text, "x.yaml", ACCOUNTS)
    return [f"{d.line}:{d.col}: {d.message} | {d.hint}" for d in report.errors]


def test_rolling_syntax_builds_the_model() -> None:
    report = validate_text(HEAD + GOOD, "x.yaml", ACCOUNTS)
    assert report.ok, [d.format() for d in report.diagnostics]
    pb = playbook_from_report(report)
    ce, pe, fixed = pb.instruments["ce"], pb.instruments["pe"], pb.instruments["fixed"]
    assert ce.expiry == RollingExpiry(nearest=ExpiryKind.WEEKLY, offset=0) and ce.atm_steps == 2
    assert pe.atm_steps == -1 and pe.underlying == "fut" and pe.is_rolling
    assert pe.rule() == "NFO NIFTY nearest monthly+1 atm-1 PE"
    assert not fixed.is_rolling and fixed.to_instrument().key == "NFO NIFTY 2026-12-29 24500 CE"
    with pytest.raises(ValueError, match="rolling instrument"):
        ce.to_instrument()
    assert pb.steps[1].chase.step_size(Decimal("0.05")) == Decimal("0.10")
    assert pb.steps[3].chase.step_size(None) == Decimal("0.5")
    with pytest.raises(ValueError, match="tick size"):
        pb.steps[1].chase.step_size(None)


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        (
            "expiry: {nearest: daily}, strike: 100",
            "6:72: nearest: invalid value 'daily' | allowed: weekly, monthly",
        ),
        ("expiry: {nearest: weekly, offset: -1}, strike: 100", "6:88: offset: must be at least 0, got -1"),
        ("expiry: {nearst: weekly}, strike: 100", "6:63: unknown key 'nearst' | did you mean 'nearest'?"),
        ("expiry: 2026-13-01, strike: 100", "6:62: '2026-13-01' is not a valid date (YYYY-MM-DD)"),
        (
            "expiry: {nearest: weekly}, strike: atm+0",
            "6:89: strike: 'atm+0' is not a valid value | write atm",
        ),
        (
            "expiry: {nearest: weekly}, strike: ATM",
            "6:89: strike: 'ATM' is not a valid value | write atm, atm+N",
        ),
        (
            "expiry: {nearest: weekly}, strike: atm+1.5",
            "6:89: strike: 'atm+1.5' is not a valid value | write",
        ),
        (
            "expiry: {nearest: weekly}, strike: atm, underlying: {exchange: NSE}",
            "6:106: missing required key",
        ),
    ],
)
def test_bad_rolling_syntax_is_pinpointed(spec: str, expect: str) -> None:
    text = (
        HEAD + f"  x: {{exchange: NFO, symbol: NIFTY, option_type: CE, {spec}}}\n"
        "steps:\n  - {kind: place, id: a, instrument: x, side: BUY, quantity: 75}\n"
    )
    found = errors(text)
    assert any(e.startswith(expect) for e in found), found


def test_chase_needs_exactly_one_of_tick_and_ticks() -> None:
    both = GOOD.replace("chase: {ticks: 2,", "chase: {ticks: 2, tick: 0.1,")
    neither = GOOD.replace("chase: {ticks: 2,", "chase: {")
    hint = "| write exactly one of tick: (rupees, e.g. 0.5) or ticks:"
    assert [e.split(": chase")[0] for e in errors(HEAD + both)] == ["16:44"]
    assert "fits more than one of its allowed forms " + hint in errors(HEAD + both)[0]
    assert "fits none of its allowed forms " + hint in errors(HEAD + neither)[0]


def test_semantic_rules_for_rolling_instruments() -> None:
    inline = GOOD.replace(
        "instrument: ce,",
        "instrument: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, "
        "strike: atm, option_type: CE},",
    )
    assert any("must be declared under instruments:" in e and "alias" in e for e in errors(HEAD + inline))
    no_underlying = GOOD.replace("\n         underlying: {exchange: MCX, symbol: GOLDM}", "")
    assert any(e.startswith("11:") and "needs the underlying" in e for e in errors(HEAD + no_underlying))
    unknown = GOOD.replace("underlying: fut", "underlying: futt")
    assert any("unknown instrument 'futt'" in e and "did you mean 'fut'" in e for e in errors(HEAD + unknown))
    loop = GOOD.replace("expiry: {nearest: monthly}}", "expiry: {nearest: monthly}, underlying: pe}")
    assert any("leads back" in e for e in errors(HEAD + loop))
    limited = (HEAD + GOOD).replace("{max_orders_per_run: 10}", "{allowed_instruments: [ce, fixed]}")
    assert errors(limited) == []  # a rolling alias allows the contract it resolves to in each run


def test_pick_expiry_weekly_monthly_and_offsets() -> None:
    days = [dt.date(2026, 12, d) for d in (1, 8, 15, 22, 29)] + [dt.date(2027, 1, 5), dt.date(2027, 1, 26)]
    day = dt.date(2026, 12, 8)
    assert pick_expiry(days, ExpiryKind.WEEKLY, 0, day, what="x") == dt.date(2026, 12, 8)  # expiry day counts
    assert pick_expiry(days, ExpiryKind.WEEKLY, 1, day, what="x") == dt.date(2026, 12, 15)
    assert pick_expiry(days, ExpiryKind.MONTHLY, 0, day, what="x") == dt.date(2026, 12, 29)
    assert pick_expiry(days, ExpiryKind.MONTHLY, 1, day, what="x") == dt.date(2027, 1, 26)
    assert pick_expiry(days, ExpiryKind.WEEKLY, 0, dt.date(2026, 12, 30), what="x") == dt.date(2027, 1, 5)
    with pytest.raises(RollingUnresolved, match="no monthly expiry at offset 2"):
        pick_expiry(days, ExpiryKind.MONTHLY, 2, day, what="x")
    with pytest.raises(RollingUnresolved, match="listed: none"):
        pick_expiry([], ExpiryKind.WEEKLY, 0, day, what="x")


def test_pick_strike_nearest_ties_lower_and_steps() -> None:
    strikes = [Decimal(s) for s in (24400, 24450, 24500, 24550, 24600)]
    assert pick_strike(strikes, Decimal("24512.3"), 0, what="x") == Decimal(24500)
    assert pick_strike(strikes, Decimal("24525"), 0, what="x") == Decimal(24500)  # halfway: the lower
    assert pick_strike(strikes, Decimal("24526"), 0, what="x") == Decimal(24550)
    assert pick_strike(strikes, Decimal("24512"), 2, what="x") == Decimal(24600)
    assert pick_strike(strikes, Decimal("24512"), -2, what="x") == Decimal(24400)
    assert pick_strike(strikes, Decimal("24650"), 0, what="x") == Decimal(24600)  # 1 interval out: the edge
    with pytest.raises(RollingUnresolved, match="atm\\+3 is beyond"):
        pick_strike(strikes, Decimal("24512"), 3, what="x")
    with pytest.raises(RollingUnresolved, match="lists no strikes"):
        pick_strike([], Decimal("24512"), 0, what="x")
    assert [parse_atm(t) for t in ("atm", "atm+2", "atm-1", "atm+10")] == [0, 2, -1, 10]
