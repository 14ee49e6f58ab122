"""Price paths: deterministic, tick-snapped, Decimal; CSV step paths with a random-walk fallback."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.brokers.paper.price_paths import (
    RandomWalk,
    ReferencePath,
    StepPath,
    default_base_price,
    load_references,
    option_value,
    path_from_options,
    second_of,
)
from runner.model import Instrument, OptionType

REL = Instrument("NSE", "RELIANCE")
FUT = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26))
OPT = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26), Decimal(24500), OptionType.CE,
                 tick_size=Decimal("0.1"))
T = second_of(dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC))


def test_walk_is_a_pure_function_of_seed_instrument_and_second() -> None:
    a, b = RandomWalk("s1"), RandomWalk("s1")
    seconds = [T + k * 37 for k in range(200)]
    assert [a.price(REL, s) for s in seconds] == [b.price(REL, s) for s in reversed(seconds)][::-1]
    assert [a.price(REL, s) for s in seconds] != [RandomWalk("s2").price(REL, s) for s in seconds]
    assert a.price(REL, T) != a.price(Instrument("NSE", "TCS"), T) or a.price(REL, T + 1) != a.price(
        Instrument("NSE", "TCS"), T + 1
    )


def test_walk_prices_are_positive_tick_multiples_near_the_base() -> None:
    walk = RandomWalk("x", {"NSE RELIANCE": Decimal(1400)})
    day = [walk.price(REL, T + k) for k in range(0, 22_500, 15)]
    assert all(isinstance(p, Decimal) and p > 0 and p % Decimal("0.05") == 0 for p in day)
    assert all(Decimal(1200) < p < Decimal(1600) for p in day)
    assert len(set(day)) > 50  # it moves
    steps = [abs(b - a) for a, b in itertools.pairwise(day)]
    assert max(steps) < Decimal(14)  # 15 s apart: no jumps of 1%
    assert all(walk.price(OPT, T + k) % Decimal("0.1") == 0 for k in range(0, 3600, 60))


def test_walk_is_continuous_across_its_internal_windows() -> None:
    walk = RandomWalk("w")
    edge = (T // 65536 + 1) * 65536
    around = [walk.price(REL, s) for s in range(edge - 3, edge + 3)]
    assert max(around) - min(around) < Decimal(5)


def test_default_base_prices() -> None:
    assert default_base_price(REL) == 1000
    assert default_base_price(FUT) == 24500
    assert default_base_price(OPT) == 100
    assert default_base_price(Instrument("NFO", "RELIANCE", dt.date(2026, 3, 26))) == 1000


def test_step_path_from_csv(tmp_path: Path) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_text(
        "time,instrument,price\n"
        "2026-03-02T09:20:00+05:30,NSE RELIANCE,1401.02\n"
        "2026-03-02T10:00:00+05:30,NSE RELIANCE,1390\n"
        "09:15,NSE TCS,3500\n"
        "12:00:30,NSE TCS,3450.5\n"
    )
    path = path_from_options({"price_csv": str(csv), "seed": 3})
    assert isinstance(path, StepPath)
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))

    def at(h: int, m: int, s: int = 0, day: int = 2) -> int:
        return second_of(dt.datetime(2026, 3, day, h, m, s, tzinfo=ist))

    assert path.price(REL, at(9, 0)) == Decimal("1401.00")  # before the first row: the first price, snapped
    assert path.price(REL, at(9, 59, 59)) == Decimal("1401.00")
    assert path.price(REL, at(10, 0)) == Decimal(1390)
    tcs = Instrument("NSE", "TCS")
    assert path.price(tcs, at(12, 0, 29)) == Decimal(3500)
    assert path.price(tcs, at(12, 0, 30, day=9)) == Decimal("3450.50")  # daily rows apply every day
    assert path.price(FUT, at(11, 0)) == RandomWalk(3).price(FUT, at(11, 0))  # fallback walk


def test_bad_csv_rows_are_reported_with_their_line(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("time,instrument,price\n09:15,NSE TCS,3500\n09:16,NSE TCS,-1\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3"):
        StepPath.from_csv(csv)


def test_set_requires_decimal() -> None:
    with pytest.raises(TypeError):
        StepPath().set(REL, 1.5, T)  # type: ignore[arg-type]


# --- the reference market of the built-in paper broker ------------------------------------------------

IST = ZoneInfo("Asia/Kolkata")
DEC = dt.date(2026, 12, 29)
Y = Decimal(1) / 12  # one month in years


def nifty(strike: int, kind: OptionType, expiry: dt.date = DEC) -> Instrument:
    return Instrument("NFO", "NIFTY", expiry, Decimal(strike), kind, tick_size=Decimal("0.05"))


def at_ist(day: dt.date, h: int, m: int = 0) -> int:
    return second_of(dt.datetime.combine(day, dt.time(h, m), IST))


def test_shipped_reference_file_is_versioned_and_has_the_common_underlyings() -> None:
    refs = load_references()
    assert refs.version and refs is load_references()  # read once
    levels = {s: refs.underlyings[s].price for s in ("NIFTY", "BANKNIFTY", "SENSEX", "RELIANCE", "HDFCBANK")}
    assert levels == {"NIFTY": 24500, "BANKNIFTY": 52000, "SENSEX": 80000, "RELIANCE": 1400, "HDFCBANK": 1700}
    assert all(isinstance(r.price, Decimal) and isinstance(r.iv, Decimal) for r in refs.underlyings.values())
    assert refs.get("sensex") is not None and refs.underlyings["SENSEX"].exchange == "BSE"
    assert {"FINNIFTY", "INFY", "TCS", "ICICIBANK", "SBIN"} <= set(refs.underlyings)


def test_bad_reference_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "refs.yaml"
    bad.write_text("version: '1'\nunderlyings:\n  NIFTY: {price: -5, iv: 0.1}\n")
    with pytest.raises(ValueError, match=r"refs\.yaml"):
        load_references(bad)


def test_option_value_is_brenner_subrahmanyam_at_the_money_and_intrinsic_at_expiry() -> None:
    s, iv = Decimal(24500), Decimal("0.13")
    atm = option_value(s, s, OptionType.CE, Y, iv)
    assert isinstance(atm, Decimal)
    assert abs(atm - Decimal("0.4") * s * iv * Y.sqrt()) / atm < Decimal("0.003")  # 0.3989 vs 0.4
    assert option_value(s, Decimal(24000), OptionType.CE, Decimal(0), iv) == 500
    assert option_value(s, Decimal(24000), OptionType.PE, Decimal(0), iv) == 0


def test_option_value_shrinks_with_distance_and_time_and_keeps_parity() -> None:
    s, iv = Decimal(52000), Decimal("0.14")
    otm_calls = [option_value(s, Decimal(k), OptionType.CE, Y, iv) for k in range(52000, 56001, 500)]
    assert all(a > b > 0 for a, b in itertools.pairwise(otm_calls))
    assert otm_calls[-1] < otm_calls[0] / 20  # far OTM is nearly worthless
    decay = [option_value(s, Decimal(52500), OptionType.CE, Y * k / 8, iv) for k in range(8, 0, -1)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    for k in (50000, 51800, 52000, 53000):
        c = option_value(s, Decimal(k), OptionType.CE, Y, iv)
        p = option_value(s, Decimal(k), OptionType.PE, Y, iv)
        assert abs((c - p) - (s - k)) < Decimal("1e-9")  # put-call parity (no rates)


def test_reference_market_levels_ticks_and_determinism() -> None:
    path, again = ReferencePath(load_references(), "s"), ReferencePath(load_references(), "s")
    day = dt.date(2026, 12, 1)
    seconds = [at_ist(day, 9, 15) + k * 60 for k in range(375)]
    rel = [path.price(Instrument("NSE", "RELIANCE", tick_size=Decimal("0.1")), s) for s in seconds]
    assert all(Decimal(1350) < p < Decimal(1450) and p % Decimal("0.1") == 0 for p in rel)
    assert len(set(rel)) > 20  # it moves
    fut = Instrument("NFO", "NIFTY", DEC, tick_size=Decimal("0.1"))
    spot = Instrument("NSE", "NIFTY")
    assert all(abs(path.price(fut, s) - path.price(spot, s)) <= Decimal("0.05") for s in seconds)  # no basis
    ce, pe = nifty(24500, OptionType.CE), nifty(24500, OptionType.PE)
    for s in seconds[::25]:
        model = path.model_price(ce, s)
        assert model is not None and abs(path.price(ce, s) - model) < model / 50  # small own noise
        assert path.price(pe, s) % Decimal("0.05") == 0
        assert path.price(ce, s) == again.price(ce, s)
    assert Decimal(300) < path.price(ce, seconds[0]) < Decimal(400)  # ~4 weeks to expiry
    assert path.price(ce, at_ist(dt.date(2026, 12, 22), 10)) < path.price(ce, seconds[0])  # theta
    expired = at_ist(dt.date(2027, 1, 4), 10)
    assert path.price(nifty(24000, OptionType.CE), expired) > 300  # intrinsic only, about 500
    assert path.price(nifty(25500, OptionType.CE), expired) == Decimal("0.05")  # worthless: one tick


def test_unknown_symbols_keep_the_fallback_and_overrides_win() -> None:
    refs = load_references()
    plain = ReferencePath(refs, 5)
    odd = Instrument("NSE", "NOSUCHCO")
    s = at_ist(dt.date(2026, 12, 1), 11)
    assert plain.price(odd, s) == RandomWalk(5).price(odd, s)
    moved = ReferencePath(refs, 5, {"NSE RELIANCE": Decimal(2800)})
    rel_ce = Instrument("NFO", "RELIANCE", DEC, Decimal(2800), OptionType.CE, tick_size=Decimal("0.05"))
    assert Decimal(2700) < moved.price(Instrument("NSE", "RELIANCE"), s) < Decimal(2900)
    assert Decimal(2700) < moved.price(Instrument("NFO", "RELIANCE", DEC), s) < Decimal(2900)
    atm = Instrument("NFO", "RELIANCE", DEC, Decimal(1400), OptionType.CE)
    assert moved.price(rel_ce, s) > Decimal("1.8") * plain.price(atm, s)  # its options follow
    own = ReferencePath(refs, 5, {nifty(24500, OptionType.CE).key: Decimal(77)})
    assert Decimal(50) < own.price(nifty(24500, OptionType.CE), s) < Decimal(110)


def test_paper_broker_defaults_to_the_reference_market_and_can_opt_out() -> None:
    from runner.accounts import Account
    from runner.brokers.paper.broker import create

    s = at_ist(dt.date(2026, 12, 1), 10)
    rel = Instrument("NSE", "RELIANCE")
    default = create(Account(name="p", broker="paper"), db_url="sqlite://").matching.prices
    assert isinstance(default, ReferencePath) and Decimal(1350) < default.price(rel, s) < Decimal(1450)
    off = create(Account(name="p", broker="paper", options={"reference_prices": False}), db_url="sqlite://")
    assert isinstance(off.matching.prices, RandomWalk) and off.matching.prices.base(rel) == 1000


def test_volatility_zero_holds_reference_and_override_levels_flat() -> None:
    """``volatility_ppm: 0`` means no walk, on the reference market too (0 is not "unset")."""
    options = {"volatility_ppm": 0, "prices": {"NSE TCS": "4100"}}
    path = path_from_options(options, references=load_references())
    seconds = [at_ist(dt.date(2026, 3, 2), 10) + n for n in range(0, 20_000, 77)]
    assert {path.price(REL, s) for s in seconds} == {Decimal(1400)}
    assert {path.price(Instrument("NSE", "TCS"), s) for s in seconds} == {Decimal(4100)}
