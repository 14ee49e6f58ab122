"""Spreads: legs are different instruments; a native spread is one order, so one product."""

from __future__ import annotations

from runner.playbook.checks.doc import Doc, instrument_label
from runner.playbook.checks.sink import Sink


def check_spreads(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        if step["kind"] != "spread":
            continue
        path = ("steps", i)
        seen: dict[str, int] = {}
        for j, leg in enumerate(step["legs"]):
            spec = doc.resolve_quiet(leg["instrument"])  # unknown ones were reported with the order
            if spec is None:
                continue
            label = instrument_label(spec)
            if label in seen:
                sink.add(
                    (*path, "legs", j, "instrument"),
                    f"leg {j + 1} repeats the instrument of leg {seen[label] + 1} ({label})",
                    "spread legs must be different instruments",
                )
            seen.setdefault(label, j)
        if step.get("mode") == "native" and len({leg.get("product", "MIS") for leg in step["legs"]}) > 1:
            sink.add((*path, "mode"), "a native spread sends one order: all legs need the same product")
