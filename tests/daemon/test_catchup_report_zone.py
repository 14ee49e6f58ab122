"""The catch-up report shows each slot in its playbook's zone, zone named (it printed UTC)."""

from __future__ import annotations

import datetime as dt

from runner.daemon.policy import CatchUpAction, CatchUpItem


def test_catch_up_line_is_in_the_playbooks_zone() -> None:
    slot = dt.datetime(2026, 12, 7, 9, 49, tzinfo=dt.UTC)
    line = CatchUpItem("eod", slot, CatchUpAction.MISSED, "3m late", "Asia/Kolkata").line()
    assert "2026-12-07 15:19:00 IST" in line and "09:49" not in line
    # a fire row without a known zone says UTC rather than leaving the zone out
    assert "2026-12-07 09:49:00 UTC" in CatchUpItem("eod", slot, CatchUpAction.MISSED, "x").line()
