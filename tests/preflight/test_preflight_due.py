"""What is due on a date (the daemon's rules and calendar gate) and the orders each instant may send."""

from __future__ import annotations

import datetime as dt

from runner.daemon.calendar_gate import CalendarGate, default_calendar_loader
from runner.playbook.validate import playbook_from_report, validate_text
from runner.preflight.due import due_on, instants, order_bursts

BOOK = """\
version: 1
name: due
timezone: Asia/Kolkata
calendar: NSE
{schedule}
instruments:
  a: {{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24000, option_type: CE}}
  b: {{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE}}
steps:
  - {{kind: spread, id: s, at: "09:20", legs: [{{instrument: a, side: BUY, quantity: 75, type: MARKET}},
     {{instrument: b, side: SELL, quantity: 75, type: MARKET}}]}}
  - {{kind: wait, id: w, order: s, status: [filled], timeout: 30s}}
  - {{kind: place, id: late, instrument: a, side: SELL, quantity: 75, type: MARKET}}
"""


def _pb(schedule: str) -> object:
    return playbook_from_report(validate_text(BOOK.format(schedule=schedule), "due.yaml"))


def test_due_follows_schedule_and_calendar() -> None:
    gate = CalendarGate(default_calendar_loader())
    daily, by_hand = _pb('schedule: {daily: "09:15"}'), _pb("")
    due, not_due = due_on([("d", daily), ("h", by_hand)], dt.date(2026, 12, 1), gate)  # a Tuesday
    assert [d.path for d in due] == ["d", "h"] and not not_due
    assert [f.isoformat() for f in due[0].fires] == ["2026-12-01T03:45:00+00:00"]
    due, not_due = due_on([("d", daily), ("h", by_hand)], dt.date(2026, 12, 5), gate)  # a Saturday
    assert due == [] and len(not_due) == 2 and not any(n.fails_closed for n in not_due)


def test_orders_counted_at_each_instant() -> None:
    gate = CalendarGate(default_calendar_loader())
    pb = _pb('schedule: {daily: "09:15"}')
    (item,), _ = due_on([("d", pb)], dt.date(2026, 12, 1), gate)
    legged = order_bursts(item, dt.date(2026, 12, 1), native_multileg=False)
    # The spread at 09:20 (two legs); the place after the wait is not counted (it depends on fills).
    assert [(b.instant.isoformat(), b.segment, b.orders) for b in legged] == [
        ("2026-12-01T03:50:00+00:00", "NFO", 1), ("2026-12-01T03:50:00+00:00", "NFO", 1)
    ]
    assert len(order_bursts(item, dt.date(2026, 12, 1), native_multileg=True)) == 1  # mode: auto goes native
    (at,) = instants(legged, per_second=8.0, burst=1, per_segment=True)
    assert at.orders == 2 and at.delay == 0.125
