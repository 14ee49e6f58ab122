"""Price paths: deterministic, tick-snapped, Decimal; CSV step paths with a random-walk fallback."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path

import pytest

from runner.model import Instrument, OptionType
from runner.prices import RandomWalk, StepPath, default_base_price, path_from_options, second_of

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
