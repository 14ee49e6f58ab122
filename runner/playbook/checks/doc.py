"""The schema-valid playbook as the semantic checks see it: the data plus indexes built once."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.playbook.durations import DurationError, parse_duration

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class AccountFacts:
    """What capability checks need of one account, read from the accounts file (no secret resolved)."""

    broker: str
    endpoints: frozenset[str] = frozenset()
    instruments: str | None = None  # the account's local master file, resolved against the accounts file


@dataclass(frozen=True)
class AccountNames:
    """Names of the accounts known for validation (``paper`` always), and where they came from.
    ``facts``: per account in the file, its broker kind and endpoint keys (capability checks)."""

    names: frozenset[str]
    source: str | None = None
    facts: tuple[tuple[str, AccountFacts], ...] = ()

    def facts_of(self, name: str) -> AccountFacts | None:
        return dict(self.facts).get(name)

_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
DERIVATIVES = frozenset({"NFO", "BFO", "MCX", "CDS"})
CASH = frozenset({"NSE", "BSE"})
ORDER_KINDS = ("place", "spread")


@dataclass
class StepInfo:
    index: int
    kind: str
    legs: dict[str, int]  # leg id -> leg index (spreads)


@dataclass
class Doc:
    data: dict[str, Any]
    accounts: AccountNames | None
    # flat step index -> id of the ``parallel`` group it is a member of (checks.groups.flatten)
    groups: dict[int, str] = field(default_factory=dict)
    vars: dict[str, Any] = field(init=False)
    instruments: dict[str, Any] = field(init=False)
    limits: dict[str, Any] = field(init=False)
    steps: list[dict[str, Any]] = field(init=False)
    # Built on first use (functools.cached_property takes a lock per access in 3.11).
    _by_id: dict[str, StepInfo] | None = field(init=False, default=None, repr=False)
    _tz_ok: bool | None = field(init=False, default=None, repr=False)
    _allowed: frozenset[str] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.vars = self.data.get("vars", {})
        self.instruments = self.data.get("instruments", {})
        self.limits = self.data.get("limits", {})
        self.steps = self.data["steps"]

    def same_group(self, i: int, j: int) -> bool:
        """Flat steps ``i`` and ``j`` are members of one ``parallel`` group."""
        group = self.groups.get(i)
        return group is not None and group == self.groups.get(j)

    @property
    def by_id(self) -> dict[str, StepInfo]:
        """Step id -> where it is; a repeated id keeps its first step (the repeat is reported)."""
        if self._by_id is None:
            index: dict[str, StepInfo] = {}
            for i, step in enumerate(self.steps):
                if step["id"] in index:
                    continue
                legs = {leg["id"]: j for j, leg in enumerate(step.get("legs", [])) if "id" in leg}
                index[step["id"]] = StepInfo(i, step["kind"], legs)
            self._by_id = index
        return self._by_id

    @property
    def tz_ok(self) -> bool:
        if self._tz_ok is None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            tz = self.data["timezone"]
            try:
                ZoneInfo(tz)
                self._tz_ok = True
            except (ZoneInfoNotFoundError, ValueError, TypeError):  # TypeError: a date such as 2026-01-01
                self._tz_ok = False
        return self._tz_ok

    @property
    def allowed_labels(self) -> frozenset[str]:
        """Labels of limits.allowed_instruments (aliases resolved; unknown aliases match nothing)."""
        if self._allowed is None:
            self._allowed = frozenset(
                instrument_label(self.instruments.get(a, {}) if isinstance(a, str) else a)
                for a in self.limits.get("allowed_instruments", ())
            )
        return self._allowed

    def orders_before(self, here: int) -> list[str]:
        return [s for s, inf in self.by_id.items() if inf.kind in ORDER_KINDS and inf.index < here]

    def resolve_quiet(self, ref: Any) -> dict[str, Any] | None:
        if isinstance(ref, dict):
            return ref
        spec: dict[str, Any] | None = self.instruments.get(ref) if isinstance(ref, str) else None
        return spec

    def target_order(self, ref: str, here: int) -> dict[str, Any] | None:
        """The place step or spread leg an earlier-order reference names, if it resolves."""
        step_id, _, leg_id = ref.partition(".")
        info = self.by_id.get(step_id)
        if info is None or info.index >= here:
            return None
        step = self.steps[info.index]
        if info.kind == "place":
            return step
        if info.kind == "spread" and leg_id in info.legs:
            leg: dict[str, Any] = step["legs"][info.legs[leg_id]]
            return leg
        return None

    def orders(self) -> list[tuple[Path, dict[str, Any], str]]:
        """Every order the playbook places: (path, order fields, what it is), place steps and spread legs."""
        out: list[tuple[Path, dict[str, Any], str]] = []
        for i, step in enumerate(self.steps):
            if step["kind"] == "place":
                out.append((("steps", i), step, "a place step"))
            elif step["kind"] == "spread":
                out.extend(
                    (("steps", i, "legs", j), leg, "a spread leg") for j, leg in enumerate(step["legs"])
                )
        return out


def parse_time(value: str) -> dt.time:
    m = _TIME_RE.match(value)
    assert m is not None  # the schema checked the pattern
    return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))


def fmt_time(t: dt.time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def duration(text: str) -> dt.timedelta | None:
    """The duration, or None when it is malformed or too long (:mod:`runner.playbook.checks.durations`
    reports it)."""
    try:
        return parse_duration(text)
    except DurationError:
        return None


def instrument_label(spec: dict[str, Any]) -> str:
    parts = [str(spec.get("exchange", "?")), str(spec.get("symbol", "?"))]
    expiry = spec.get("expiry")
    if isinstance(expiry, dict):  # rolling: {nearest: weekly, offset: 1}
        offset = f"+{expiry['offset']}" if expiry.get("offset") else ""
        parts.append(f"nearest {expiry.get('nearest')}{offset}")
    elif expiry is not None:
        parts.append(str(expiry))
    if isinstance(spec.get("strike"), str):  # atm, atm+2
        parts.append(spec["strike"])
    elif spec.get("strike") is not None:
        parts.append(format(Decimal(spec["strike"]).normalize(), "f"))
    if spec.get("option_type"):
        parts.append(str(spec["option_type"]))
    return " ".join(parts)
