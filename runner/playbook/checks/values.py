"""Numbers as written: literals, ``${var}`` / ``${a * b}`` references to vars:, and ``{ltp: ...}`` offsets."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink, did_you_mean, kind_of
from runner.playbook.ltp_offsets import Unit, parse_offset

_VAR_RE = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s*\*\s*([A-Za-z_][A-Za-z0-9_]*|\d+))?\s*\}$")


def number(doc: Doc, sink: Sink, path: Path, value: Any, *, whole: bool) -> Any:
    """Resolve a literal or ${var} / ${a * b}; report undefined or mistyped variables. None if unknown."""
    if value is None:
        return None
    if isinstance(value, dict):  # {ltp: ...}: known only when the step runs
        check_ltp(sink, path, value)
        return None
    if not isinstance(value, str):
        return value
    m = _VAR_RE.match(value)
    if m is None:
        return None
    parts = [m[1]] + ([m[2]] if m[2] else [])
    result: Any = 1
    need = "a whole number" if whole else "a number"
    for name in parts:
        if name.isdigit():
            result *= int(name)
            continue
        if name not in doc.vars:
            guess = did_you_mean(name, doc.vars)
            sink.add(
                path,
                f"undefined variable '{name}'",
                f"did you mean '{guess}'?"
                if guess
                else f"define it under vars: (known: {', '.join(doc.vars) or 'none'})",
            )
            return None
        var = doc.vars[name]
        if (
            isinstance(var, bool)
            or not isinstance(var, int | Decimal)
            or (whole and not isinstance(var, int))
        ):
            sink.add(
                path, f"variable '{name}' is {kind_of(var)}, but {path[-1]} needs {need}", f"see vars.{name}"
            )
            return None
        result *= var
    if isinstance(result, int | Decimal) and result <= 0:
        sink.add(path, f"{value} gives {result}; {path[-1]} must be positive")
        return None
    return result


def check_ltp(sink: Sink, path: Path, value: dict[str, Any]) -> None:
    offset = parse_offset(value["ltp"])  # the schema checked the syntax
    if offset.unit is Unit.PERCENT and offset.amount <= -100:
        sink.add(
            (*path, "ltp"),
            f"ltp {offset} gives a price of zero or less",
            'a price must stay above zero: e.g. "-5%"',
        )
