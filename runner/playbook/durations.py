"""The one duration parser: ``500ms``, ``30s``, ``2m``, ``1h30m``; a bare integer is seconds.

Used by validation (:mod:`runner.playbook.checks.durations`) and at run time (:mod:`runner.playbook.models`
re-exports it), so a duration the validator accepts is exactly one the engine can wait for. Bounded by
:data:`MAX_DURATION`: every duration a playbook has (``after``, ``every``, timeouts, ``older_than``,
``late: run-within``) lives inside one trading day (orders are DAY or IOC), so anything longer is a typo,
and refusing it keeps huge numbers away from ``timedelta`` (OverflowError) and from waits of years.
Imports nothing heavy: ``runner validate`` starts fast.
"""

from __future__ import annotations

import datetime as dt
import re

MAX_DURATION = dt.timedelta(hours=24)
HINT = "write e.g. 500ms, 30s, 2m or 1h30m (at most 24h)"

DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_MS = (3_600_000, 60_000, 1_000, 1)  # per unit of each group above
_MAX_MS = MAX_DURATION // dt.timedelta(milliseconds=1)
_MAX_DIGITS = 12  # longer digit runs are over the bound anyway; int() of them is never attempted


class DurationError(ValueError):
    """Not a duration, or longer than :data:`MAX_DURATION` (:data:`HINT` says what to write instead)."""


def parse_duration(text: str) -> dt.timedelta:
    """The duration ``text`` means; :class:`DurationError` if it is malformed or over the bound."""
    text = str(text).strip()
    if text.isdecimal():  # what int() reads (str.isdigit() also admits e.g. superscripts)
        groups: tuple[str | None, ...] = (None, None, text, None)
    else:
        m = DURATION_RE.match(text)
        if not m or not any(m.groups()):
            raise DurationError(f"invalid duration {text[:40]!r}")
        groups = m.groups()
    if any(g is not None and len(g.lstrip("0")) > _MAX_DIGITS for g in groups):
        raise DurationError(f"duration {text[:40]!r} is longer than 24h")
    ms = sum(int(g) * unit for g, unit in zip(groups, _MS, strict=True) if g)
    if ms > _MAX_MS:
        raise DurationError(f"duration {text[:40]!r} is longer than 24h")
    return dt.timedelta(milliseconds=ms)
