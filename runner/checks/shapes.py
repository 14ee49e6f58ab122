"""Cancel, wait and square_off steps: the fields that only make sense together or alone."""

from __future__ import annotations

from runner.checks.doc import Doc
from runner.checks.sink import Sink


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
        if step["kind"] == "square_off" and "at" not in step:
            sink.warn(
                ("steps", i, "kind"),
                "square_off without at: runs as soon as it is reached",
                'add e.g. at: "15:15" so it runs before the broker\'s auto square-off',
                key=True,
            )
