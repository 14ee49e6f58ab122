"""Step times: misfire policies, inside the calendar's session, in top-to-bottom order."""

from __future__ import annotations

import datetime as dt

from runner.playbook.checks.doc import Doc, Path, fmt_time, parse_time
from runner.playbook.checks.header import check_late
from runner.playbook.checks.sink import Sink
from runner.playbook.yamlload import YamlError


def check_step_times(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        path = ("steps", i)
        if "late" in step:
            check_late(sink, (*path, "late"), step["late"])
            if "at" not in step:
                sink.warn((*path, "late"), "late has no effect without at", key=True)
        if "at" in step:
            _check_in_session(doc, sink, (*path, "at"), parse_time(step["at"]))
        if step["kind"] == "wait" and "until" in step:
            _check_in_session(doc, sink, (*path, "until"), parse_time(step["until"]))


def _check_in_session(doc: Doc, sink: Sink, path: Path, when: dt.time) -> None:
    exchange = doc.data.get("calendar")
    if exchange is None:
        return
    from runner.trading_calendars import CalendarError, load_calendar

    try:
        cal = load_calendar(exchange)
    except (CalendarError, YamlError, OSError) as exc:
        sink.add(("calendar",), f"calendar {exchange} cannot be loaded: {exc}")
        return
    start, end = cal.regular_bounds()
    for day, special in cal.special_sessions.items():  # e.g. a Muhurat evening session
        if cal.covers(day) and special.open <= when <= special.close:
            return
    if not start <= when <= end:
        sink.add(
            path,
            f"{fmt_time(when)} is outside the {exchange} session "
            f"({fmt_time(start)}-{fmt_time(end)} {cal.timezone})",
            "pick a time inside the session (times are local to timezone:)",
        )


def check_time_order(doc: Doc, sink: Sink) -> None:
    last: tuple[dt.time, int] | None = None
    for i, step in enumerate(doc.steps):
        key = "at" if "at" in step else "until" if step["kind"] == "wait" and "until" in step else None
        if key is None:
            continue
        when = parse_time(step[key])
        if last is not None and when < last[0]:
            prev = doc.steps[last[1]]
            sink.add(
                ("steps", i, key),
                f"{key} {fmt_time(when)} is earlier than step '{prev['id']}' "
                f"({fmt_time(last[0])}); steps run top to bottom",
                "order the steps by time, or fix the time",
            )
        else:
            last = (when, i)
