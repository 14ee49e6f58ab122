"""Top-level fields: timezone, schedule (cron, windows, misfire policy), account, limits present."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from runner.playbook import durations
from runner.playbook.checks.doc import Doc, Path, duration, parse_time
from runner.playbook.checks.sink import Sink, did_you_mean, short

_ZONES = ("Asia/Kolkata", "Asia/Calcutta", "UTC", "Europe/London", "America/New_York")


def check_timezone(doc: Doc, sink: Sink) -> None:
    if doc.tz_ok:
        return
    tz = doc.data["timezone"]
    guess = did_you_mean(str(tz), _ZONES)
    sink.add(
        ("timezone",),
        f"unknown IANA timezone {short(tz)}",
        f"did you mean '{guess}'?" if guess else "e.g. Asia/Kolkata",
    )


def check_schedule(doc: Doc, sink: Sink) -> None:
    sched = doc.data.get("schedule")
    if sched is None:
        return
    given = [k for k in ("daily", "cron", "every", "once") if k in sched]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        sink.add(
            ("schedule",),
            f"schedule needs exactly one of daily, cron, every or once (got {what})",
            'e.g. daily: "09:14"',
        )
    if "cron" in sched:
        _check_cron(doc, sink, str(sched["cron"]))  # str: an unquoted date is text to the schema
    if "between" in sched:
        if "every" not in sched:
            sink.add(("schedule", "between"), "between only applies to every", None, key=True)
        start, end = (parse_time(t) for t in sched["between"])
        if end <= start:
            sink.add(("schedule", "between", 1), "the window ends before it starts")
    if "days" in sched and "daily" not in sched:
        sink.add(("schedule", "days"), "days only applies to daily", "use cron for other patterns", key=True)
    every = duration(sched["every"]) if "every" in sched else None
    if every is not None and every <= dt.timedelta(0):
        sink.add(("schedule", "every"), "every must be longer than zero")
    if "late" in sched:
        check_late(sink, ("schedule", "late"), sched["late"])


def _check_cron(doc: Doc, sink: Sink, expr: str) -> None:
    fields = expr.split()
    if len(fields) != 5:
        sink.add(
            ("schedule", "cron"),
            f"cron needs 5 fields (minute hour day month weekday), got {len(fields)}",
            'e.g. "15 9 * * mon-fri"',
        )
        return
    problem = _cron_problem(expr, doc.data["timezone"] if doc.tz_ok else "UTC")
    if problem:
        sink.add(
            ("schedule", "cron"),
            f"invalid cron expression {short(expr)}: {problem}",
            'e.g. "15 9 * * mon-fri" (minute hour day month weekday)',
        )


@cache
def _cron_problem(expr: str, tz: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone=tz)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def check_late(sink: Sink, path: Path, late: str) -> None:
    if not late.startswith("run-within "):
        return
    try:
        window = durations.parse_duration(late.split(" ", 1)[1])
    except durations.DurationError as exc:
        sink.add(path, f"run-within: {exc}", durations.HINT)
        return
    if window <= dt.timedelta(0):
        sink.add(path, "run-within needs a duration longer than zero")


def check_account(doc: Doc, sink: Sink) -> None:
    accounts = doc.accounts
    account: Any = doc.data.get("account", "paper")
    if accounts is None or account in accounts.names:
        return
    known = ", ".join(sorted(accounts.names))
    guess = did_you_mean(account, accounts.names)
    where = f" in {accounts.source}" if accounts.source else " (no accounts file found)"
    hint = f"did you mean '{guess}'? " if guess else ""
    hint += f"known accounts: {known}; pass --accounts FILE or set RUNNER_ACCOUNTS"
    sink.add(("account",), f"unknown account '{account}'{where}", hint)


# Step kinds that send new orders, so can open a position (a cancel, square-off or wait cannot).
OPENING_KINDS = frozenset({"place", "spread"})


def opens_positions(steps: Any) -> bool:
    """Whether any step (nested groups included) sends a new order or grows one (a modify's quantity)."""
    if isinstance(steps, list):
        return any(opens_positions(s) for s in steps)
    if not isinstance(steps, dict):
        return False
    kind = steps.get("kind")
    if kind in OPENING_KINDS or (kind == "modify" and steps.get("quantity") is not None):
        return True
    return any(opens_positions(v) for v in steps.values() if isinstance(v, list))


def check_has_limits(doc: Doc, sink: Sink) -> None:
    """Only where a typo could send a huge order: a cancel-only or square-off playbook needs no limits."""
    if not doc.data.get("limits") and opens_positions(doc.data.get("steps")):
        sink.warn(
            ("name",),
            "no limits: block",
            "add e.g. limits: {max_quantity_per_order: 1800, "
            "max_orders_per_run: 20} so a typo cannot send a huge order",
        )
