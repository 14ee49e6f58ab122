from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from runner.trading_calendars import CalendarError, NotCovered, clear_cache, load_calendar

D = dt.date


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNNER_CALENDARS", raising=False)
    clear_cache()


def test_nse_regular_weekend_holiday() -> None:
    nse = load_calendar("NSE")
    assert nse.session(D(2026, 12, 29)) == (dt.time(9, 15), dt.time(15, 30))  # Tuesday expiry
    assert nse.regular.pre_open == (dt.time(9, 0), dt.time(9, 8))
    assert not nse.is_trading_day(D(2026, 12, 26))  # Saturday
    assert not nse.is_trading_day(D(2026, 1, 26))  # Republic Day
    assert not nse.is_trading_day(D(2026, 12, 25))
    assert nse.next_trading_day(D(2026, 12, 24)) == D(2026, 12, 28)


def test_muhurat_special_session_on_a_sunday() -> None:
    nse = load_calendar("nse")
    assert nse.session(D(2026, 11, 8)) == (dt.time(18, 0), dt.time(19, 0))
    assert nse.session_info(D(2026, 11, 8)).name.startswith("Muhurat")  # type: ignore[union-attr]


def test_fail_closed_outside_data() -> None:
    nse = load_calendar("NSE")
    assert nse.covers(D(2027, 12, 31)) and not nse.covers(D(2028, 1, 3))
    assert not nse.is_trading_day(D(2028, 1, 3)) and nse.session(D(2028, 1, 3)) is None
    with pytest.raises(NotCovered):
        nse.next_trading_day(D(2027, 12, 31))
    assert nse.is_provisional(D(2027, 6, 1)) and not nse.is_provisional(D(2026, 6, 1))


def test_holidays_are_weekdays_and_data_is_consistent() -> None:
    for exchange in ("NSE", "BSE", "MCX"):
        cal = load_calendar(exchange)
        for day in cal.holidays:
            assert day.weekday() < 5, f"{exchange} {day} is a weekend; do not list it"
            assert cal.covers(day)
        for session in cal.special_sessions.values():
            assert session.open < session.close


def test_mcx_close_follows_us_daylight_saving() -> None:
    mcx = load_calendar("MCX")
    assert mcx.session(D(2026, 7, 1)) == (dt.time(9, 0), dt.time(23, 30))  # US summer time
    assert mcx.session(D(2026, 12, 1)) == (dt.time(9, 0), dt.time(23, 55))  # US standard time
    assert mcx.session(D(2026, 3, 26)) == (dt.time(17, 0), dt.time(23, 30))  # evening-only holiday
    assert mcx.session(D(2026, 1, 26)) is None


def test_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "NSE.yaml").write_text(
        "version: desk-1\nholidays: {2026-12-24: desk closed}\nopen_days: [2026-12-25]\n"
        "special_sessions: {2026-12-26: {name: drill, open: '10:00', close: '11:00'}}\n"
    )
    nse = load_calendar("NSE", tmp_path)
    assert not nse.is_trading_day(D(2026, 12, 24))
    assert nse.is_trading_day(D(2026, 12, 25))
    assert nse.session(D(2026, 12, 26)) == (dt.time(10), dt.time(11))
    assert nse.version == "2026.1+desk-1"
    monkeypatch.setenv("RUNNER_CALENDARS", str(tmp_path))
    assert not load_calendar("NSE").is_trading_day(D(2026, 12, 24))
    assert load_calendar("BSE").is_trading_day(D(2026, 12, 24))  # no BSE override: untouched


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CalendarError):
        load_calendar("NYSE")
    (tmp_path / "NSE.yaml").write_text("holidayz: {}\n")
    with pytest.raises(CalendarError, match="unknown keys"):
        load_calendar("NSE", tmp_path)
