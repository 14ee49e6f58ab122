"""Fire-time rules: daily / cron / every+between / once, in IANA zones, across DST transitions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from runner.daemon.rules import build_rule, late_window, localize
from runner.playbook.models import Schedule

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
LON = ZoneInfo("Europe/London")


def local(when: dt.datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def fires(schedule: dict[str, object], tz: str, since: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    return build_rule(Schedule.model_validate(schedule), tz).between(since, until)


def test_ny_spring_forward_0230_daily_fires_once_when_the_gap_ends() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    got = fires(
        {"daily": "02:30"},
        "America/New_York",
        dt.datetime(2026, 3, 7, 12, tzinfo=UTC),
        dt.datetime(2026, 3, 10, 12, tzinfo=UTC),
    )
    assert [local(t, NY) for t in got] == [
        "2026-03-08 03:00 EDT",
        "2026-03-09 02:30 EDT",
        "2026-03-10 02:30 EDT",
    ]


def test_ny_fall_back_0130_daily_fires_once_at_first_occurrence() -> None:
    # 2026-11-01: 01:00-02:00 happens twice (EDT then EST).
    got = fires(
        {"daily": "01:30"},
        "America/New_York",
        dt.datetime(2026, 10, 31, 12, tzinfo=UTC),
        dt.datetime(2026, 11, 2, 12, tzinfo=UTC),
    )
    assert [local(t, NY) for t in got] == ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]
    assert got[1] - got[0] == dt.timedelta(hours=25)


def test_london_spring_forward_and_fall_back() -> None:
    spring = fires(
        {"daily": "01:30"},
        "Europe/London",
        dt.datetime(2026, 3, 28, 12, tzinfo=UTC),
        dt.datetime(2026, 3, 30, 12, tzinfo=UTC),
    )
    assert [local(t, LON) for t in spring] == ["2026-03-29 02:00 BST", "2026-03-30 01:30 BST"]
    autumn = fires(
        {"daily": "01:30"},
        "Europe/London",
        dt.datetime(2026, 10, 24, 12, tzinfo=UTC),
        dt.datetime(2026, 10, 26, 12, tzinfo=UTC),
    )
    assert [local(t, LON) for t in autumn] == ["2026-10-25 01:30 BST", "2026-10-26 01:30 GMT"]


def test_cron_across_fall_back_has_no_duplicates_and_runs_forward() -> None:
    got = fires(
        {"cron": "*/30 1-2 * * *"},
        "America/New_York",
        dt.datetime(2026, 11, 1, 4, tzinfo=UTC),
        dt.datetime(2026, 11, 1, 12, tzinfo=UTC),
    )
    assert [local(t, NY) for t in got] == [
        "2026-11-01 01:00 EDT",
        "2026-11-01 01:30 EDT",
        "2026-11-01 02:00 EST",
        "2026-11-01 02:30 EST",
    ]
    assert got == sorted(set(got))


def test_cron_spring_forward_gap_slots_collapse_into_one_fire() -> None:
    got = fires(
        {"cron": "*/30 2-3 * * *"},
        "America/New_York",
        dt.datetime(2026, 3, 8, 5, tzinfo=UTC),
        dt.datetime(2026, 3, 8, 12, tzinfo=UTC),
    )
    assert [local(t, NY) for t in got] == ["2026-03-08 03:00 EDT", "2026-03-08 03:30 EDT"]


def test_cron_weekday_numbers_follow_crontab_not_apscheduler() -> None:
    # 2026-05-01 is a Friday. 1-5 must mean Monday..Friday; 0 and 7 Sunday.
    since, until = dt.datetime(2026, 4, 30, 12, tzinfo=UTC), dt.datetime(2026, 5, 8, 0, tzinfo=UTC)
    weekdays = fires({"cron": "15 9 * * 1-5"}, "Asia/Kolkata", since, until)
    assert [t.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%a %H:%M") for t in weekdays] == [
        "Fri 09:15",
        "Mon 09:15",
        "Tue 09:15",
        "Wed 09:15",
        "Thu 09:15",
    ]
    sundays = fires({"cron": "0 10 * * 0"}, "Asia/Kolkata", since, until)
    assert sundays == fires({"cron": "0 10 * * 7"}, "Asia/Kolkata", since, until)
    assert [t.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%a %d") for t in sundays] == ["Sun 03"]


def test_every_within_between_window_inclusive_and_days() -> None:
    got = fires(
        {"every": "5m", "between": ["09:15", "09:25"], "days": ["mon"]},
        "Asia/Kolkata",
        dt.datetime(2026, 5, 1, 0, tzinfo=UTC),
        dt.datetime(2026, 5, 5, 0, tzinfo=UTC),
    )
    assert [t.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%a %H:%M") for t in got] == [
        "Mon 09:15",
        "Mon 09:20",
        "Mon 09:25",
    ]


def test_every_next_after_mid_window_lands_on_the_grid() -> None:
    rule = build_rule(Schedule(every="7m", between=("09:15", "10:00")), "Asia/Kolkata")
    after = dt.datetime(2026, 5, 4, 9, 30, 1, tzinfo=ZoneInfo("Asia/Kolkata"))
    nxt = rule.next_after(after)
    assert nxt is not None
    assert nxt.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M") == "09:36"


def test_once_naive_means_playbook_zone_and_fires_once() -> None:
    rule = build_rule(Schedule(once=dt.datetime(2026, 6, 1, 9, 15)), "Asia/Kolkata")
    first = rule.next_after(dt.datetime(2026, 5, 1, tzinfo=UTC))
    assert first == dt.datetime(2026, 6, 1, 3, 45, tzinfo=UTC)
    assert rule.next_after(first) is None


def test_bad_window_and_bad_cron_are_rejected() -> None:
    with pytest.raises(ValueError, match="end must be after"):
        build_rule(Schedule(every="1m", between=("15:30", "09:15")), "Asia/Kolkata")
    with pytest.raises(ValueError, match="5 fields"):
        build_rule(Schedule(cron="* * *"), "Asia/Kolkata")


def test_late_policy_parsing() -> None:
    assert late_window(Schedule(daily="09:15")) is None
    assert late_window(Schedule(daily="09:15", late="run-within 2m")) == dt.timedelta(minutes=2)


def test_localize_existing_times_round_trip() -> None:
    wall = dt.datetime(2026, 7, 1, 9, 15)
    assert localize(wall, NY).astimezone(NY).replace(tzinfo=None) == wall
