from __future__ import annotations

import datetime as dt

from runner import timefmt


def test_when_names_the_zone_and_accepts_iso_text() -> None:
    at = dt.datetime(2026, 12, 7, 9, 49, tzinfo=dt.UTC)
    assert timefmt.when(at, "Asia/Kolkata") == "2026-12-07 15:19:00 IST"
    assert timefmt.when(at.isoformat(), "Asia/Kolkata") == "2026-12-07 15:19:00 IST"
    assert timefmt.when(at, None) == "2026-12-07 09:49:00 UTC"
    assert timefmt.when(at, "Not/AZone") == "2026-12-07 09:49:00 UTC"  # never a crash, never unnamed
    assert timefmt.when(None, "Asia/Kolkata") == "-"
    assert timefmt.when(at, "America/New_York") == "2026-12-07 04:49:00 EST"


def test_shared_zone_only_when_all_agree() -> None:
    assert timefmt.shared_zone(["Asia/Kolkata", None, "Asia/Kolkata"]).key == "Asia/Kolkata"
    assert timefmt.shared_zone(["Asia/Kolkata", "Europe/London"]).key == "UTC"
    assert timefmt.shared_zone([]).key == "UTC"


def test_countdown() -> None:
    assert [timefmt.countdown(s) for s in (0, 5.2, 65, 3723)] == ["0s", "6s", "1m05s", "1h02m03s"]
