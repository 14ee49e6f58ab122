"""Cancel, wait and square_off steps: the fields that only make sense together or alone."""

from __future__ import annotations

from typing import Any

from runner.playbook.checks.doc import Doc
from runner.playbook.checks.sink import Sink


def check_cancel_steps(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        if step["kind"] == "cancel" and ("order" in step) == ("all_open" in step):
            sink.add(
                ("steps", i),
                "a cancel step names exactly one of order or all_open",
                "order: <step id> for one order, all_open: {...} for a filter",
            )


def check_wait_steps(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        if step["kind"] != "wait":
            continue
        path = ("steps", i)
        if ("until" in step) == ("order" in step):
            sink.add(
                path,
                "a wait step names exactly one of until or order",
                'until: "09:20" for a time, order: <step id> with status: [...] for an order',
            )
        if "order" in step:
            if "status" not in step:
                sink.add(path, "waiting for an order needs status:", "e.g. status: [filled]")
        elif "status" in step:
            sink.add((*path, "status"), "status only applies when waiting for an order", key=True)


def check_square_off_steps(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        if step["kind"] != "square_off":
            continue
        if "at" not in step:
            sink.warn(
                ("steps", i, "kind"),
                "square_off without at: runs as soon as it is reached",
                'add e.g. at: "15:15" so it runs before the broker\'s auto square-off',
                key=True,
            )
        _check_scope(doc, sink, i, step)


def _check_scope(doc: Doc, sink: Sink, i: int, step: dict[str, Any]) -> None:
    """``scope:`` and the filter fields that also choose whose trades a square-off closes."""
    scope = step.get("scope", "account")
    f = step.get("filter") or {}
    if "tag" in f:  # positions carry no tag: this filter would close nothing, silently
        sink.add(
            ("steps", i, "filter", "tag"),
            "a square-off's filter.tag matches no position (positions carry no tag)",
            f"to close the net of the orders tagged {f['tag']!r}, write scope: {{tag: {f['tag']}}}",
            key=True,
        )
    if scope != "account" and f.get("this_run_only"):
        sink.add(
            ("steps", i, "scope"),
            "scope and filter.this_run_only both choose whose trades to close",
            "keep one: this_run_only closes this run's own net, scope: playbook every run's of the day",
            key=True,
        )
    if isinstance(scope, dict) and "tag" in scope:
        placed = [o for _, o, _ in doc.orders()]
        if placed and not any(o.get("tag") == scope["tag"] for o in placed):
            sink.warn(
                ("steps", i, "scope", "tag"),
                f"no order of this playbook carries tag {scope['tag']!r}: this square-off closes only "
                "other playbooks' orders with that tag",
                f"add tag: {scope['tag']} to the orders it should close",
                key=True,
            )
