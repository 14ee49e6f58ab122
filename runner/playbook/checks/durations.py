"""Every duration field parses with the one bounded parser (:mod:`runner.playbook.durations`), so the engine
never meets a duration it cannot wait for. ``late: run-within`` is checked with the other misfire rules."""

from __future__ import annotations

from typing import Any

from runner.playbook import durations
from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink

# Keys whose values are durations (schemas/playbook.v1.json: every "$ref": "#/$defs/Duration").
DURATION_KEYS = frozenset({"after", "every", "leg_timeout", "older_than", "timeout", "verify_timeout"})


def check_durations(doc: Doc, sink: Sink) -> None:
    if "schedule" in doc.data:
        _walk(sink, ("schedule",), doc.data["schedule"])
    for i, step in enumerate(doc.steps):
        _walk(sink, ("steps", i), step)


def _walk(sink: Sink, path: Path, value: Any) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in DURATION_KEYS and isinstance(child, str | int) and not isinstance(child, bool):
                try:
                    durations.parse_duration(str(child))
                except durations.DurationError as exc:
                    sink.add((*path, key), f"{key}: {exc}", durations.HINT)
            else:
                _walk(sink, (*path, key), child)
    elif isinstance(value, list):
        for j, child in enumerate(value):
            _walk(sink, (*path, j), child)
