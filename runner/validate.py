"""Playbook validation: YAML -> JSON Schema -> semantic checks, every problem as ``file:line:col``.

1. :func:`runner.yamlload.load_yaml` (safe, strict, positions kept);
2. the published JSON Schema (``schemas/playbook.v1.json``), validator built once per process; each error
   is mapped back to a line:col and rewritten as a short message plus a hint of what to write instead;
3. only when the schema passes: semantic checks on the (now well-formed) data: references resolve and
   point backwards, lot multiples, order-type rules, times inside the calendar session, cron/timezone,
   the account exists.

:func:`load_playbook` is the entry point for the engine: it validates, then builds the pydantic model.
The validator itself works on plain data so ``runner validate`` does not pay for pydantic at start-up.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.relprice import Unit, offset_hint, parse_offset
from runner.yamlload import Loaded, YamlError, load_yaml, to_json

if TYPE_CHECKING:
    from runner.playbook import Playbook

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "schemas"
PLAYBOOK_SCHEMA = "playbook.v1.json"
ACCOUNTS_SCHEMA = "accounts.v1.json"
YAML_SUFFIXES = (".yaml", ".yml")

_VAR_RE = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s*\*\s*([A-Za-z_][A-Za-z0-9_]*|\d+))?\s*\}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)$")
_DERIVATIVES = frozenset({"NFO", "BFO", "MCX", "CDS"})
_CASH = frozenset({"NSE", "BSE"})
_CALENDAR_OF = {"NSE": "NSE", "NFO": "NSE", "CDS": "NSE", "BSE": "BSE", "BFO": "BSE", "MCX": "MCX"}


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int
    col: int
    severity: Severity
    message: str
    hint: str | None = None
    path: tuple[str | int, ...] = ()

    def format(self, color: bool = False) -> str:
        sev = self.severity.value
        if color:
            code = "31" if self.severity is Severity.ERROR else "33"
            sev = f"\033[1;{code}m{sev}\033[0m"
        text = f"{self.file}:{self.line}:{self.col}: {sev}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "path": list(self.path),
        }


@dataclass
class Report:
    """Validation result for one file. ``value`` is the loaded data when the file parsed."""

    file: str
    kind: str = "playbook"  # or "accounts"
    diagnostics: list[Diagnostic] = field(default_factory=list)
    value: Any = None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "valid": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }


class PlaybookInvalid(ValueError):
    def __init__(self, report: Report) -> None:
        first = report.errors[0].format() if report.errors else report.file
        super().__init__(f"{report.file}: {len(report.errors)} error(s); first: {first}")
        self.report = report


# --- schema validators, built once ----------------------------------------------------------------


@cache
def schema_text(name: str = PLAYBOOK_SCHEMA) -> str:
    return (SCHEMA_DIR / name).read_text(encoding="utf-8")


@cache
def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(name))
    return schema


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    formats = FormatChecker(formats=())

    @formats.checks("date", raises=ValueError)
    def _date(value: object) -> bool:
        return not isinstance(value, str) or bool(dt.date.fromisoformat(value))

    return Draft202012Validator(_schema(name), format_checker=formats)


@cache
def _def_names(name: str) -> dict[int, str]:
    """id(definition dict) -> its $defs name, to name the thing a failing subschema describes."""
    return {id(body): def_name for def_name, body in _schema(name).get("$defs", {}).items()}


_LABELS = {
    "LocalTime": "time",
    "Duration": "duration",
    "Identifier": "identifier",
    "OrderRef": "order reference",
    "Late": "misfire policy",
    "DateTime": "date and time",
    "Quantity": "quantity",
    "Price": "price",
    "FixedPrice": "price",
    "LtpOffset": "ltp offset",
}
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "nothing",
}


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"whole number {value}"
    if isinstance(value, Decimal):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {_short(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    text = str(value) if isinstance(value, Decimal | dt.date) or value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _did_you_mean(word: str, options: Iterable[str]) -> str | None:
    options = [str(o) for o in options]
    folded = {o.casefold(): o for o in options}
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
        close = [folded[c] for c in close]
    return close[0] if close else None


def _secretish(path: Sequence[str | int]) -> bool:
    return "credentials" in path


class _Sink:
    """Collects diagnostics for one file, positioned via the loaded document."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.items: list[Diagnostic] = []
        self._seen: set[tuple[int, int, str]] = set()

    def add(
        self,
        path: Sequence[str | int],
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        severity: Severity = Severity.ERROR,
    ) -> None:
        line, col = self.loaded.key_mark(path) if key else self.loaded.mark(path)
        if (line, col, message) in self._seen:
            return
        self._seen.add((line, col, message))
        self.items.append(Diagnostic(self.loaded.filename, line, col, severity, message, hint, tuple(path)))

    def warn(
        self, path: Sequence[str | int], message: str, hint: str | None = None, *, key: bool = False
    ) -> None:
        self.add(path, message, hint, key=key, severity=Severity.WARNING)


@cache
def _fast(name: str) -> Callable[[Any], bool]:
    from runner.fastschema import compile_schema

    return compile_schema(_schema(name))


def _schema_errors(sink: _Sink, value: Any, schema_name: str) -> None:
    if _fast(schema_name)(value):  # the common case; jsonschema (precise, slower) only on failure
        return
    validator = _validator(schema_name)
    names = _def_names(schema_name)
    for error in validator.iter_errors(to_json(value)):
        _explain(sink, error, names)


def _explain(sink: _Sink, error: Any, names: dict[int, str]) -> None:
    path = tuple(error.absolute_path)
    where = path[-1] if path and isinstance(path[-1], str) else None
    keyword, expected, value, schema = error.validator, error.validator_value, error.instance, error.schema
    label = _LABELS.get(names.get(id(schema), ""), "")
    custom_hint = schema.get("errorMessage") if isinstance(schema, dict) else None
    subject = f"{where}: " if where else ""
    secret = _secretish(path)
    shown = "a value" if secret else _short(value)
    hint: str | None

    if label == "ltp offset":
        # One message whatever keyword failed (type, pattern, min/max of the integer form).
        sink.add(
            path, f"ltp: {_short(value)} is not a valid offset from the last traded price", offset_hint(value)
        )
    elif keyword == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        for extra in value:
            if extra in allowed:
                continue
            guess = _did_you_mean(extra, allowed)
            hint = f"did you mean '{guess}'?" if guess else f"allowed keys here: {', '.join(allowed)}"
            sink.add((*path, extra), f"unknown key '{extra}'", hint, key=True)
    elif keyword == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        what = _describe_object(value, path)
        for name in missing:
            sink.add(path, f"missing required key '{name}'{what}", f"add '{name}:'")
    elif keyword in ("enum", "const"):
        options = [str(o) for o in (expected if keyword == "enum" else [expected])]
        listed = ", ".join(options)
        guess = _did_you_mean(str(value), options) if isinstance(value, str) else None
        hint = f"did you mean '{guess}'? allowed: {listed}" if guess else f"allowed: {listed}"
        sink.add(path, f"{subject}invalid value {shown}", hint)
    elif keyword == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        if label:
            words = f"{'an' if label[0] in 'aeiou' else 'a'} {label}"
        hint = custom_hint
        if hint is None and "object" in types and isinstance(value, str | int | Decimal) and not secret:
            hint = "indent the keys of this mapping under it"
        if hint is None and types == ["array"] and isinstance(value, str | int | Decimal):
            hint = f"write a list: [{value}]"
        if secret:
            hint = custom_hint or "credentials are references: {env: VAR} or {file: PATH}"
        sink.add(path, f"{subject}expected {words}, got {'a value' if secret else _kind_of(value)}", hint)
    elif keyword == "pattern":
        hint = custom_hint
        if label in ("quantity", "price") and isinstance(value, str) and _NUMBER_RE.match(value):
            hint = f"write the number unquoted: {value}"
        elif label == "time" and isinstance(value, str):
            hint = _time_hint(value) or hint
        noun = label or "value"
        sink.add(path, f"{subject}{shown} is not a valid {noun}", hint)
    elif keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[keyword]
        sink.add(path, f"{subject}must be {op} {expected}, got {shown}", custom_hint)
    elif keyword in ("minItems", "maxItems"):
        op = "at least" if keyword == "minItems" else "at most"
        n = len(value) if isinstance(value, list) else 0
        sink.add(path, f"{subject}needs {op} {expected} item{'s' if expected != 1 else ''}, got {n}")
    elif keyword in ("minLength", "maxLength"):
        op = "at least" if keyword == "minLength" else "at most"
        n = len(value) if isinstance(value, str) else 0
        sink.add(path, f"{subject}must be {op} {expected} characters long, got {n}")
    elif keyword in ("minProperties", "maxProperties"):
        sink.add(path, f"{subject}{error.message if not secret else 'wrong number of keys'}", custom_hint)
    elif keyword == "format":
        sink.add(path, f"{subject}{shown} is not a valid {expected}", "write YYYY-MM-DD, e.g. 2026-12-29")
    elif keyword == "propertyNames":
        sink.add(
            (*path, str(value)),
            f"invalid name {shown}",
            custom_hint or "names start with a letter; then letters, digits, '_' or '-'",
            key=True,
        )
    elif keyword in ("items", "prefixItems") and isinstance(value, list):
        sink.add(path, f"{subject}too many items ({len(value)})")
    elif keyword == "pattern" or not secret:
        sink.add(path, f"{subject}{error.message}", custom_hint)
    else:
        sink.add(path, f"{subject}invalid value", custom_hint)


def _describe_object(value: Any, path: tuple[str | int, ...]) -> str:
    if isinstance(value, dict) and isinstance(value.get("kind"), str) and isinstance(value.get("id"), str):
        return f" in {value['kind']} step '{value['id']}'"
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        return f" in {value['kind']} step"
    if not path:
        return " at the top level"
    return ""


def _time_hint(value: str) -> str | None:
    m = re.fullmatch(r"\s*(\d{1,2})[:.](\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?\s*", value)
    if not m:
        return None
    hour, minute = int(m[1]), int(m[2])
    if m[4]:
        hour = hour % 12 + (12 if m[4].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return f'write "{hour:02d}:{minute:02d}{":" + m[3] if m[3] else ""}" (quoted, 24h)'


# --- semantic checks ---------------------------------------------------------------------------------


def _time(value: str) -> dt.time:
    m = _TIME_RE.match(value)
    assert m is not None  # the schema checked the pattern
    return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))


def _fmt_time(t: dt.time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


@dataclass
class _StepInfo:
    index: int
    kind: str
    legs: dict[str, int]  # leg id -> leg index (spreads)


class _Semantics:
    def __init__(self, sink: _Sink, doc: dict[str, Any], accounts: AccountNames | None) -> None:
        self.sink, self.doc, self.accounts = sink, doc, accounts
        self.vars: dict[str, Any] = doc.get("vars", {})
        self.instruments: dict[str, Any] = doc.get("instruments", {})
        self.limits: dict[str, Any] = doc.get("limits", {})
        self.steps: list[dict[str, Any]] = doc["steps"]
        self.by_id: dict[str, _StepInfo] = {}

    def run(self) -> None:
        self.check_header()
        self.check_instruments()
        self.check_limits()
        self.index_steps()
        for i, step in enumerate(self.steps):
            path = ("steps", i)
            getattr(self, f"step_{step['kind']}")(path, step, i)
            self.check_timing(path, step)
        self.check_time_order()

    # header -------------------------------------------------------------------------------------------
    def check_header(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        tz = self.doc["timezone"]
        try:
            ZoneInfo(tz)
            self.tz_ok = True
        except (ZoneInfoNotFoundError, ValueError):
            self.tz_ok = False
            guess = _did_you_mean(
                tz, ("Asia/Kolkata", "Asia/Calcutta", "UTC", "Europe/London", "America/New_York")
            )
            self.sink.add(
                ("timezone",),
                f"unknown IANA timezone {_short(tz)}",
                f"did you mean '{guess}'?" if guess else "e.g. Asia/Kolkata",
            )
        if "schedule" in self.doc:
            self.check_schedule(self.doc["schedule"])
        account = self.doc.get("account", "paper")
        if self.accounts is not None and account not in self.accounts.names:
            known = ", ".join(sorted(self.accounts.names))
            guess = _did_you_mean(account, self.accounts.names)
            where = f" in {self.accounts.source}" if self.accounts.source else " (no accounts file found)"
            hint = f"did you mean '{guess}'? " if guess else ""
            hint += f"known accounts: {known}; pass --accounts FILE or set RUNNER_ACCOUNTS"
            self.sink.add(("account",), f"unknown account '{account}'{where}", hint)
        if not self.doc.get("limits"):
            self.sink.warn(
                ("name",),
                "no limits: block",
                "add e.g. limits: {max_quantity_per_order: 1800, "
                "max_orders_per_run: 20} so a typo cannot send a huge order",
            )

    def check_schedule(self, sched: dict[str, Any]) -> None:
        given = [k for k in ("daily", "cron", "every", "once") if k in sched]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            self.sink.add(
                ("schedule",),
                f"schedule needs exactly one of daily, cron, every or once (got {what})",
                'e.g. daily: "09:14"',
            )
        if "cron" in sched:
            self.check_cron(sched["cron"])
        if "between" in sched:
            if "every" not in sched:
                self.sink.add(("schedule", "between"), "between only applies to every", None, key=True)
            start, end = (_time(t) for t in sched["between"])
            if end <= start:
                self.sink.add(("schedule", "between", 1), "the window ends before it starts")
        if "days" in sched and "daily" not in sched:
            self.sink.add(
                ("schedule", "days"), "days only applies to daily", "use cron for other patterns", key=True
            )
        if "every" in sched and _duration(sched["every"]) <= dt.timedelta(0):
            self.sink.add(("schedule", "every"), "every must be longer than zero")
        if "late" in sched:
            self.check_late(("schedule", "late"), sched["late"])

    def check_cron(self, expr: str) -> None:
        fields = expr.split()
        if len(fields) != 5:
            self.sink.add(
                ("schedule", "cron"),
                f"cron needs 5 fields (minute hour day month weekday), got {len(fields)}",
                'e.g. "15 9 * * mon-fri"',
            )
            return
        problem = _cron_problem(expr, self.doc["timezone"] if self.tz_ok else "UTC")
        if problem:
            self.sink.add(
                ("schedule", "cron"),
                f"invalid cron expression {_short(expr)}: {problem}",
                'e.g. "15 9 * * mon-fri" (minute hour day month weekday)',
            )

    def check_late(self, path: tuple[str | int, ...], late: str) -> None:
        if late.startswith("run-within ") and _duration(late.split(" ", 1)[1]) <= dt.timedelta(0):
            self.sink.add(path, "run-within needs a duration longer than zero")

    # instruments & limits -------------------------------------------------------------------------------
    def check_instruments(self) -> None:
        for alias, spec in self.instruments.items():
            self.check_spec(("instruments", alias), spec)

    def check_spec(self, path: tuple[str | int, ...], spec: dict[str, Any]) -> None:
        exch = spec["exchange"]
        opt, strike, expiry = spec.get("option_type"), spec.get("strike"), spec.get("expiry")
        if opt is not None and (strike is None or expiry is None):
            self.sink.add(
                path, "an option needs expiry, strike and option_type", "add the missing expiry/strike"
            )
        if strike is not None and opt is None:
            self.sink.add(
                (*path, "strike"), "strike without option_type", "add option_type: CE or PE", key=True
            )
        if exch in _DERIVATIVES and expiry is None:
            self.sink.add(
                path, f"{exch} instruments are derivatives and need an expiry", "add expiry: YYYY-MM-DD"
            )
        if exch in _CASH and (expiry is not None or opt is not None):
            self.sink.add(
                (*path, "exchange"),
                f"{exch} is the cash segment; derivatives trade on {'NFO' if exch == 'NSE' else 'BFO'}",
                f"write exchange: {'NFO' if exch == 'NSE' else 'BFO'}",
            )
        tick = spec.get("tick_size")
        if tick is not None and strike is not None and Decimal(strike) % Decimal(tick) != 0:
            self.sink.warn((*path, "strike"), f"strike {strike} is not a multiple of tick_size {tick}")

    def check_limits(self) -> None:
        for i, ref in enumerate(self.limits.get("allowed_instruments", [])):
            self.resolve_instrument(("limits", "allowed_instruments", i), ref)

    def resolve_instrument(self, path: tuple[str | int, ...], ref: Any) -> dict[str, Any] | None:
        if isinstance(ref, dict):
            if path[0] != "instruments":
                self.check_spec(path, ref)
            return ref
        if ref in self.instruments:
            spec: dict[str, Any] = self.instruments[ref]
            return spec
        guess = _did_you_mean(ref, self.instruments)
        known = ", ".join(self.instruments) or "none defined"
        self.sink.add(
            path,
            f"unknown instrument '{ref}'",
            f"did you mean '{guess}'?" if guess else f"define it under instruments: (known: {known})",
        )
        return None

    # steps ---------------------------------------------------------------------------------------------
    def index_steps(self) -> None:
        for i, step in enumerate(self.steps):
            sid = step["id"]
            if sid in self.by_id:
                line, col = self.sink.loaded.mark(("steps", self.by_id[sid].index, "id"))
                self.sink.add(
                    ("steps", i, "id"),
                    f"duplicate step id '{sid}' (first used at {line}:{col})",
                    "step ids must be unique: orders are named after them",
                )
                continue
            legs: dict[str, int] = {}
            for j, leg in enumerate(step.get("legs", [])):
                if "id" not in leg:
                    continue
                if leg["id"] in legs:
                    self.sink.add(
                        ("steps", i, "legs", j, "id"), f"duplicate leg id '{leg['id']}' in spread '{sid}'"
                    )
                legs[leg["id"]] = j
            self.by_id[sid] = _StepInfo(i, step["kind"], legs)

    def check_ref(self, path: tuple[str | int, ...], ref: str, here: int, *, whole_spread: bool) -> None:
        step_id, _, leg_id = ref.partition(".")
        info = self.by_id.get(step_id)
        orders = [s for s, inf in self.by_id.items() if inf.kind in ("place", "spread") and inf.index < here]
        if info is None:
            guess = _did_you_mean(step_id, orders)
            self.sink.add(
                path,
                f"unknown order '{ref}'",
                f"did you mean '{guess}'?"
                if guess
                else f"refer to an earlier place or spread step ({', '.join(orders) or 'none so far'})",
            )
            return
        if info.index >= here:
            line, col = self.sink.loaded.mark(("steps", info.index))
            self.sink.add(
                path,
                f"order '{ref}' refers to step '{step_id}' at {line}:{col}, which "
                "does not come before this step",
                "steps run top to bottom: move this step after it",
            )
            return
        if info.kind not in ("place", "spread"):
            self.sink.add(
                path,
                f"'{step_id}' is a {info.kind} step, not an order",
                f"refer to a place or spread step ({', '.join(orders) or 'none so far'})",
            )
            return
        if info.kind == "place" and leg_id:
            self.sink.add(path, f"'{step_id}' is a place step and has no legs", f"write order: {step_id}")
        elif info.kind == "spread" and not leg_id and not whole_spread:
            legs = ", ".join(f"{step_id}.{leg}" for leg in info.legs) or f"give the legs of '{step_id}' ids"
            self.sink.add(path, f"'{step_id}' is a spread: name one leg", f"e.g. {legs}")
        elif info.kind == "spread" and leg_id and leg_id not in info.legs:
            guess = _did_you_mean(leg_id, info.legs)
            self.sink.add(
                path,
                f"spread '{step_id}' has no leg '{leg_id}'",
                f"did you mean '{step_id}.{guess}'?"
                if guess
                else f"legs with ids: {', '.join(info.legs) or 'none (add id: to the legs)'}",
            )

    def check_order_fields(
        self, path: tuple[str | int, ...], order: dict[str, Any], what: str
    ) -> dict[str, Any] | None:
        spec = self.resolve_instrument((*path, "instrument"), order["instrument"])
        otype = order.get("type", "MARKET")
        has_price, has_trigger = "price" in order, "trigger_price" in order
        if otype in ("LIMIT", "SL") and not has_price:
            self.sink.add(path, f"a {otype} order needs a price", "add price: ... (or use type: MARKET)")
        if otype in ("SL", "SL-M") and not has_trigger:
            self.sink.add(path, f"an {otype} order needs a trigger_price", "add trigger_price: ...")
        if otype in ("MARKET", "SL-M") and has_price:
            relative = isinstance(order["price"], dict)
            self.sink.add(
                (*path, "price"),
                f"a {otype} order must not have a price"
                + (" (not even one relative to LTP)" if relative else ""),
                (
                    "remove price, or use type: LIMIT"
                    + (" to place a limit at the LTP offset" if relative else "")
                    if otype == "MARKET"
                    else "use type: SL for a limit stop-loss"
                ),
                key=True,
            )
        if otype in ("MARKET", "LIMIT") and has_trigger:
            self.sink.add(
                (*path, "trigger_price"),
                f"a {otype} order has no trigger_price",
                "remove it, or use type: SL / SL-M",
                key=True,
            )
        if ("quantity" in order) == ("lots" in order):
            self.sink.add(
                path,
                f"{what} needs exactly one of quantity or lots",
                "e.g. lots: 1 (uses the instrument's lot_size) or quantity: 75",
            )
        price = self.number((*path, "price"), order.get("price"), whole=False)
        trigger = self.number((*path, "trigger_price"), order.get("trigger_price"), whole=False)
        self.check_ltp_order(path, order, otype)
        qty = self.number((*path, "quantity"), order.get("quantity"), whole=True)
        lots = self.number((*path, "lots"), order.get("lots"), whole=True)
        if spec is None:
            return None
        lot = spec.get("lot_size")
        label = _instrument_label(spec)
        if lots is not None:
            if lot is None:
                self.sink.add(
                    (*path, "lots"),
                    f"lots needs the lot size of {label}",
                    "add lot_size: to the instrument, or give quantity",
                    key=True,
                )
            else:
                qty = lots * lot
        elif qty is not None and lot is not None and qty % lot:
            lower = max(lot, int(qty) // lot * lot)
            self.sink.add(
                (*path, "quantity"),
                f"quantity {qty} is not a multiple of the lot size {lot} of {label}",
                f"use quantity: {lower} or {lower + lot}, or lots: {max(1, int(qty) // lot)}",
            )
        if spec.get("exchange") in _DERIVATIVES and order.get("product") == "CNC":
            self.sink.add(
                (*path, "product"), f"CNC is delivery equity; {spec['exchange']} orders use NRML or MIS"
            )
        if spec.get("exchange") in _CASH and order.get("product") == "NRML":
            self.sink.add(
                (*path, "product"), f"NRML is for derivatives; {spec['exchange']} equity uses CNC or MIS"
            )
        tick = spec.get("tick_size")
        for name, val in (("price", price), ("trigger_price", trigger)):
            if val is not None and tick is not None and Decimal(val) % Decimal(tick):
                self.sink.add((*path, name), f"{name} {val} is not a multiple of the tick size {tick}")
        if otype == "SL" and price is not None and trigger is not None:
            if order["side"] == "BUY" and trigger > price:
                self.sink.add(
                    (*path, "trigger_price"),
                    f"a BUY SL triggers at or below its price (trigger {trigger} > price {price})",
                )
            if order["side"] == "SELL" and trigger < price:
                self.sink.add(
                    (*path, "trigger_price"),
                    f"a SELL SL triggers at or above its price (trigger {trigger} < price {price})",
                )
        self.check_against_limits(path, spec, qty, price, lot, order["instrument"])
        if qty is not None and spec.get("freeze_quantity") and qty > spec["freeze_quantity"]:
            self.sink.warn(
                path,
                f"quantity {qty} is above the freeze quantity {spec['freeze_quantity']} of {label}",
                "the exchange rejects it unless sliced",
            )
        if (
            isinstance(order.get("disclosed_quantity"), int)
            and qty is not None
            and order["disclosed_quantity"] > qty
        ):
            self.sink.add((*path, "disclosed_quantity"), "disclosed_quantity is larger than the quantity")
        return spec

    def check_against_limits(
        self,
        path: tuple[str | int, ...],
        spec: dict[str, Any],
        qty: int | None,
        price: Decimal | None,
        lot: int | None,
        ref: Any,
    ) -> None:
        lim = self.limits
        if qty is not None and "max_quantity_per_order" in lim and qty > lim["max_quantity_per_order"]:
            self.sink.add(
                path,
                f"quantity {qty} exceeds limits.max_quantity_per_order ({lim['max_quantity_per_order']})",
            )
        if qty is not None and lot and "max_lots_per_order" in lim and qty // lot > lim["max_lots_per_order"]:
            self.sink.add(
                path, f"{qty // lot} lots exceed limits.max_lots_per_order ({lim['max_lots_per_order']})"
            )
        if (
            qty is not None
            and price is not None
            and "max_notional" in lim
            and qty * price > lim["max_notional"]
        ):
            self.sink.add(path, f"notional {qty * price} exceeds limits.max_notional ({lim['max_notional']})")
        if "allowed_exchanges" in lim and spec["exchange"] not in lim["allowed_exchanges"]:
            self.sink.add(
                (*path, "instrument"), f"exchange {spec['exchange']} is not in limits.allowed_exchanges"
            )
        allowed = lim.get("allowed_instruments")
        if allowed is not None:
            keys = {
                _instrument_label(self.instruments.get(a, {}) if isinstance(a, str) else a) for a in allowed
            }
            if _instrument_label(spec) not in keys:
                self.sink.add(
                    (*path, "instrument"), f"{_instrument_label(spec)} is not in limits.allowed_instruments"
                )

    def number(self, path: tuple[str | int, ...], value: Any, *, whole: bool) -> Any:
        """Resolve a literal or ${var} / ${a * b}; report undefined or mistyped variables. None if unknown."""
        if value is None:
            return None
        if isinstance(value, dict):  # {ltp: ...}: known only when the step runs
            self.check_ltp(path, value)
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
            if name not in self.vars:
                guess = _did_you_mean(name, self.vars)
                self.sink.add(
                    path,
                    f"undefined variable '{name}'",
                    f"did you mean '{guess}'?"
                    if guess
                    else f"define it under vars: (known: {', '.join(self.vars) or 'none'})",
                )
                return None
            var = self.vars[name]
            if (
                isinstance(var, bool)
                or not isinstance(var, int | Decimal)
                or (whole and not isinstance(var, int))
            ):
                self.sink.add(
                    path,
                    f"variable '{name}' is {_kind_of(var)}, but {path[-1]} needs {need}",
                    f"see vars.{name}",
                )
                return None
            result *= var
        if isinstance(result, int | Decimal) and result <= 0:
            self.sink.add(path, f"{value} gives {result}; {path[-1]} must be positive")
            return None
        return result

    def check_ltp(self, path: tuple[str | int, ...], value: dict[str, Any]) -> None:
        offset = parse_offset(value["ltp"])  # the schema checked the syntax
        if offset.unit is Unit.PERCENT and offset.amount <= -100:
            self.sink.add(
                (*path, "ltp"),
                f"ltp {offset} gives a price of zero or less",
                'a price must stay above zero: e.g. "-5%"',
            )

    def check_ltp_order(self, path: tuple[str | int, ...], order: dict[str, Any], otype: str) -> None:
        """Market-relative prices on one order: stop direction and SL price/trigger consistency."""
        price, trigger = order.get("price"), order.get("trigger_price")
        side = order["side"]
        if isinstance(trigger, dict) and otype in ("SL", "SL-M"):
            off = parse_offset(trigger["ltp"])
            wrong = off.amount >= 0 if side == "SELL" else off.amount <= 0
            if wrong:
                where = "at or above" if side == "SELL" else "at or below"
                self.sink.warn(
                    (*path, "trigger_price", "ltp"),
                    f"a {side} stop triggered {where} the last traded price ({off.label}) fires at once",
                    f"a {side} stop sits {'below' if side == 'SELL' else 'above'} the market: "
                    f'e.g. {{ltp: "{"-" if side == "SELL" else "+"}1%"}}',
                )
        if otype == "SL" and isinstance(price, dict) and isinstance(trigger, dict):
            p, t = parse_offset(price["ltp"]), parse_offset(trigger["ltp"])
            if p.unit is t.unit or not p.amount or not t.amount:
                if side == "BUY" and t.amount > p.amount:
                    self.sink.add(
                        (*path, "trigger_price"),
                        f"a BUY SL triggers at or below its price (trigger {t.label} > price {p.label})",
                    )
                if side == "SELL" and t.amount < p.amount:
                    self.sink.add(
                        (*path, "trigger_price"),
                        f"a SELL SL triggers at or above its price (trigger {t.label} < price {p.label})",
                    )

    def step_place(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        self.check_order_fields(path, step, "a place step")

    def step_spread(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        seen: dict[str, int] = {}
        for j, leg in enumerate(step["legs"]):
            spec = self.check_order_fields((*path, "legs", j), leg, "a spread leg")
            if spec is None:
                continue
            label = _instrument_label(spec)
            if label in seen:
                self.sink.add(
                    (*path, "legs", j, "instrument"),
                    f"leg {j + 1} repeats the instrument of leg {seen[label] + 1} ({label})",
                    "spread legs must be different instruments",
                )
            seen.setdefault(label, j)
        if step.get("mode") == "native" and len({leg.get("product", "MIS") for leg in step["legs"]}) > 1:
            self.sink.add((*path, "mode"), "a native spread sends one order: all legs need the same product")

    def step_modify(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        self.check_ref((*path, "order"), step["order"], i, whole_spread=False)
        changes: list[str] = [k for k in ("price", "trigger_price", "quantity", "chase") if k in step]
        if step.get("to_market"):
            changes.append("to_market")
        if not changes:
            self.sink.add(
                path,
                "this modify step changes nothing",
                "give price, trigger_price, quantity, chase or to_market: true",
            )
        if "chase" in step and "price" in step:
            self.sink.add((*path, "chase"), "give either price or chase, not both", key=True)
        if step.get("to_market") and ("price" in step or "chase" in step):
            self.sink.add(
                (*path, "to_market"),
                "to_market drops the price; remove price/chase (or use chase.then_market)",
                key=True,
            )
        self.number((*path, "price"), step.get("price"), whole=False)
        self.number((*path, "trigger_price"), step.get("trigger_price"), whole=False)
        qty = self.number((*path, "quantity"), step.get("quantity"), whole=True)
        target = self.target_order(step["order"], i)
        if qty is not None and target is not None:
            spec = self.resolve_quiet(target.get("instrument"))
            lot = spec.get("lot_size") if spec else None
            if lot and qty % lot:
                self.sink.add((*path, "quantity"), f"quantity {qty} is not a multiple of the lot size {lot}")
        if "chase" in step:
            chase = step["chase"]
            self.number((*path, "chase", "limit_price"), chase.get("limit_price"), whole=False)
            if target is not None and target.get("type", "MARKET") not in ("LIMIT", "SL"):
                self.sink.add(
                    (*path, "chase"),
                    f"chase moves a limit price, but '{step['order']}' is a "
                    f"{target.get('type', 'MARKET')} order",
                    "place it as type: LIMIT",
                    key=True,
                )
            spec = self.resolve_quiet(target.get("instrument")) if target else None
            if spec and spec.get("tick_size") and Decimal(chase["tick"]) % Decimal(spec["tick_size"]):
                self.sink.add(
                    (*path, "chase", "tick"),
                    f"chase tick {chase['tick']} is not a multiple of the tick size {spec['tick_size']}",
                )

    def step_cancel(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        if ("order" in step) == ("all_open" in step):
            self.sink.add(
                path,
                "a cancel step names exactly one of order or all_open",
                "order: <step id> for one order, all_open: {...} for a filter",
            )
        if "order" in step:
            self.check_ref((*path, "order"), step["order"], i, whole_spread=True)
        if "all_open" in step:
            self.check_filter((*path, "all_open"), step["all_open"])

    def step_square_off(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        if "filter" in step:
            self.check_filter((*path, "filter"), step["filter"])
        if "at" not in step:
            self.sink.warn(
                (*path, "kind"),
                "square_off without at: runs as soon as it is reached",
                'add e.g. at: "15:15" so it runs before the broker\'s auto square-off',
                key=True,
            )

    def step_wait(self, path: tuple[str | int, ...], step: dict[str, Any], i: int) -> None:
        if ("until" in step) == ("order" in step):
            self.sink.add(
                path,
                "a wait step names exactly one of until or order",
                'until: "09:20" for a time, order: <step id> with status: [...] for an order',
            )
        if "order" in step:
            self.check_ref((*path, "order"), step["order"], i, whole_spread=True)
            if "status" not in step:
                self.sink.add(path, "waiting for an order needs status:", "e.g. status: [filled]")
        elif "status" in step:
            self.sink.add((*path, "status"), "status only applies when waiting for an order", key=True)

    def check_filter(self, path: tuple[str | int, ...], filt: dict[str, Any]) -> None:
        for j, ref in enumerate(filt.get("instruments", [])):
            self.resolve_instrument((*path, "instruments", j), ref)

    def target_order(self, ref: str, here: int) -> dict[str, Any] | None:
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

    def resolve_quiet(self, ref: Any) -> dict[str, Any] | None:
        if isinstance(ref, dict):
            return ref
        spec = self.instruments.get(ref) if isinstance(ref, str) else None
        return spec

    # timing ---------------------------------------------------------------------------------------------
    def check_timing(self, path: tuple[str | int, ...], step: dict[str, Any]) -> None:
        if "late" in step:
            self.check_late((*path, "late"), step["late"])
            if "at" not in step:
                self.sink.warn((*path, "late"), "late has no effect without at", key=True)
        if "at" in step:
            self.check_in_session((*path, "at"), _time(step["at"]))
        if step["kind"] == "wait" and "until" in step:
            self.check_in_session((*path, "until"), _time(step["until"]))

    def check_in_session(self, path: tuple[str | int, ...], when: dt.time) -> None:
        exchange = self.doc.get("calendar")
        if exchange is None:
            return
        from runner.calendars import CalendarError, load_calendar

        try:
            cal = load_calendar(exchange)
        except (CalendarError, YamlError, OSError) as exc:
            self.sink.add(("calendar",), f"calendar {exchange} cannot be loaded: {exc}")
            return
        start, end = cal.regular_bounds()
        for day, special in cal.special_sessions.items():  # e.g. a Muhurat evening session
            if cal.covers(day) and special.open <= when <= special.close:
                return
        if not start <= when <= end:
            self.sink.add(
                path,
                f"{_fmt_time(when)} is outside the {exchange} session "
                f"({_fmt_time(start)}-{_fmt_time(end)} {cal.timezone})",
                "pick a time inside the session (times are local to timezone:)",
            )

    def check_time_order(self) -> None:
        last: tuple[dt.time, int] | None = None
        for i, step in enumerate(self.steps):
            key = "at" if "at" in step else "until" if step["kind"] == "wait" and "until" in step else None
            if key is None:
                continue
            when = _time(step[key])
            if last is not None and when < last[0]:
                prev = self.steps[last[1]]
                self.sink.add(
                    ("steps", i, key),
                    f"{key} {_fmt_time(when)} is earlier than step '{prev['id']}' "
                    f"({_fmt_time(last[0])}); steps run top to bottom",
                    "order the steps by time, or fix the time",
                )
            else:
                last = (when, i)


@cache
def _cron_problem(expr: str, tz: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone=tz)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def _instrument_label(spec: dict[str, Any]) -> str:
    parts = [str(spec.get("exchange", "?")), str(spec.get("symbol", "?"))]
    if spec.get("expiry") is not None:
        parts.append(str(spec["expiry"]))
    if spec.get("strike") is not None:
        parts.append(format(Decimal(spec["strike"]).normalize(), "f"))
    if spec.get("option_type"):
        parts.append(str(spec["option_type"]))
    return " ".join(parts)


def _duration(text: str) -> dt.timedelta:
    text = text.strip()
    if text.isdigit():
        return dt.timedelta(seconds=int(text))
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?", text)
    if not m:
        return dt.timedelta(0)
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return dt.timedelta(hours=h, minutes=mi, seconds=s, milliseconds=ms)


# --- accounts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountNames:
    """Names of the accounts known for validation (``paper`` always), and where they came from."""

    names: frozenset[str]
    source: str | None = None


def _account_semantics(sink: _Sink, doc: dict[str, Any]) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from runner.brokers import REGISTRY

    for name, body in doc.get("accounts", {}).items():
        kind = body["broker"]
        if kind not in REGISTRY:
            guess = _did_you_mean(kind, REGISTRY)
            sink.add(
                ("accounts", name, "broker"),
                f"unknown broker kind {_short(kind)}",
                (f"did you mean '{guess}'? " if guess else "") + f"known: {', '.join(sorted(REGISTRY))}",
            )
        try:
            ZoneInfo(body.get("timezone", "Asia/Kolkata"))
        except (ZoneInfoNotFoundError, ValueError):
            sink.add(("accounts", name, "timezone"), "unknown IANA timezone", "e.g. Asia/Kolkata")
        if body.get("instruments"):
            path = Path(sink.loaded.filename).parent / body["instruments"]
            if not path.exists():
                sink.warn(("accounts", name, "instruments"), f"instrument master {path} does not exist")


def validate_accounts_text(text: str, filename: str) -> Report:
    report = Report(filename, kind="accounts")
    loaded = _load(report, text)
    if loaded is None:
        return report
    sink = _Sink(loaded)
    if not isinstance(loaded.value, dict):
        sink.add((), "an accounts file is a mapping with version: 1 and accounts:")
    else:
        _schema_errors(sink, loaded.value, ACCOUNTS_SCHEMA)
        if not sink.items:
            _account_semantics(sink, loaded.value)
    report.diagnostics = sorted(sink.items, key=_order)
    report.value = loaded.value
    return report


def _find_accounts_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Same lookup as :func:`runner.accounts.find_accounts_file` (a test keeps them equal), without
    importing pydantic: ``runner validate`` must start fast."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("RUNNER_ACCOUNTS"):
        return Path(env)
    for candidate in ("accounts.yaml", "~/.config/runner/accounts.yaml"):
        path = Path(candidate).expanduser()
        if path.is_file():
            return path
    return None


def account_names(accounts_file: str | os.PathLike[str] | None = None) -> tuple[AccountNames, Report | None]:
    """Known account names (paper included) and the accounts file's own report, if a file was found."""
    path = _find_accounts_file(accounts_file)
    if path is None:
        return AccountNames(frozenset({"paper"})), None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        report = Report(str(path), kind="accounts")
        report.diagnostics.append(
            Diagnostic(str(path), 1, 1, Severity.ERROR, f"cannot read accounts file: {exc.strerror}")
        )
        return AccountNames(frozenset({"paper"}), str(path)), report
    report = validate_accounts_text(text, str(path))
    names = {"paper"}
    if isinstance(report.value, dict) and isinstance(report.value.get("accounts"), dict):
        names |= set(report.value["accounts"])
    return AccountNames(frozenset(names), str(path)), report


# --- entry points --------------------------------------------------------------------------------------


def _order(d: Diagnostic) -> tuple[int, int, int]:
    return d.line, d.col, 0 if d.severity is Severity.ERROR else 1


def _load(report: Report, text: str) -> Loaded | None:
    try:
        return load_yaml(text, report.file)
    except YamlError as exc:
        for line, col, message in exc.errors:
            hint = "quote the value if it is meant as text" if "tag" in message else None
            report.diagnostics.append(Diagnostic(report.file, line, col, Severity.ERROR, message, hint))
        return None


def validate_text(text: str, filename: str = "<string>", accounts: AccountNames | None = None) -> Report:
    """Validate one playbook's text. ``accounts=None`` skips the account-exists check."""
    report = Report(filename)
    loaded = _load(report, text)
    if loaded is None:
        return report
    sink = _Sink(loaded)
    doc = loaded.value
    if doc is None:
        sink.add((), "empty file", "a playbook needs version: 1, name, timezone and steps")
    elif not isinstance(doc, dict):
        sink.add(
            (),
            f"a playbook is a mapping (key: value lines), got {_kind_of(doc)}",
            "start with version: 1, name:, timezone: and steps:",
        )
    else:
        _schema_errors(sink, doc, PLAYBOOK_SCHEMA)
        if not sink.items:
            _Semantics(sink, doc, accounts).run()
    report.diagnostics = sorted(sink.items, key=_order)
    report.value = doc
    return report


def is_accounts_doc(text: str) -> bool:
    """Cheap sniff: an accounts file has a top-level ``accounts:`` key and no ``steps:``."""
    return re.search(r"^accounts:", text, re.M) is not None and re.search(r"^steps:", text, re.M) is None


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files as given; directories recursively for *.yaml / *.yml (hidden entries skipped), sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path).parts
                if (
                    child.suffix in YAML_SUFFIXES
                    and child.is_file()
                    and not any(p.startswith(".") for p in rel)
                ):
                    yield child
        else:
            yield path


def validate_paths(
    paths: Iterable[str | os.PathLike[str]],
    accounts_file: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
) -> list[Report]:
    """Validate every file (directories recursively), in order. The accounts file's report comes first if
    it has problems or was given explicitly. Missing paths raise FileNotFoundError. ``jobs``: worker
    processes (default: one per CPU once there are many files; results do not depend on it)."""
    names, accounts_report = account_names(accounts_file)
    reports: list[Report] = []
    if accounts_report is not None and (accounts_file is not None or accounts_report.diagnostics):
        reports.append(accounts_report)
    files = [str(p) for p in expand_paths(paths)]
    if jobs is None:
        jobs = min(os.cpu_count() or 1, 8) if len(files) >= PARALLEL_FROM else 1
    if jobs > 1 and len(files) > 1:
        from concurrent.futures import ProcessPoolExecutor

        size = max(1, -(-len(files) // (jobs * 4)))
        chunks = [files[i : i + size] for i in range(0, len(files), size)]
        with ProcessPoolExecutor(jobs) as pool:
            for part in pool.map(_validate_files, chunks, [names] * len(chunks)):
                reports.extend(part)
    else:
        reports.extend(_validate_files(files, names, keep_value=True))
    return reports


PARALLEL_FROM = 200  # below this, starting workers costs more than it saves


def _validate_files(files: list[str], names: AccountNames, keep_value: bool = False) -> list[Report]:
    out = []
    for name in files:
        text = Path(name).read_text(encoding="utf-8", errors="replace")
        report = (
            validate_accounts_text(text, name) if is_accounts_doc(text) else validate_text(text, name, names)
        )
        if not keep_value:
            report.value = None  # not worth pickling back from a worker
        out.append(report)
    return out


def load_playbook(
    path: str | os.PathLike[str], accounts_file: str | os.PathLike[str] | None = None
) -> Playbook:
    """Validate and build the typed model (for the engine). Raises :class:`PlaybookInvalid`."""
    names, _ = account_names(accounts_file)
    text = Path(path).read_text(encoding="utf-8")
    return playbook_from_report(validate_text(text, str(path), names))


def playbook_from_report(report: Report) -> Playbook:
    if not report.ok:
        raise PlaybookInvalid(report)
    from runner.playbook import Playbook

    # The schema saw dates as ISO strings (a date where text is expected, e.g. `description: 2026-01-01`,
    # is valid text): give the model the same view. Vars keep their loaded types (dates stay dates).
    value = to_json(report.value)
    if isinstance(report.value, dict) and "vars" in report.value:
        value["vars"] = report.value["vars"]
    return Playbook.model_validate(value)
