"""Playbook validation: YAML -> JSON Schema -> semantic checks, every problem as ``file:line:col``.

1. :func:`runner.playbook.yamlload.load_yaml` (safe, strict, positions kept);
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
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.playbook.checks.doc import AccountFacts, AccountNames
from runner.playbook.checks.sink import Diagnostic, Severity, Sink, did_you_mean, kind_of, short
from runner.playbook.checks.suite import run_checks
from runner.playbook.ltp_offsets import offset_hint
from runner.playbook.yamlload import Loaded, YamlError, decode, load_yaml, read_text, to_json

if TYPE_CHECKING:
    from runner.playbook.models import Playbook

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "schemas"
PLAYBOOK_SCHEMA = "playbook.v1.json"
ACCOUNTS_SCHEMA = "accounts.v1.json"
ALERTS_SCHEMA = "alerts.v1.json"
YAML_SUFFIXES = (".yaml", ".yml")

_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)$")


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


def _secretish(path: Sequence[str | int]) -> bool:
    # an alerts target or heartbeat URL usually holds a token: never echoed in a message
    return "credentials" in path or (bool(path) and path[0] in ("targets", "heartbeat"))


@cache
def _fast(name: str) -> Callable[[Any], bool]:
    from runner.playbook.fastschema import compile_schema

    return compile_schema(_schema(name))


def _schema_errors(sink: Sink, value: Any, schema_name: str) -> None:
    if _fast(schema_name)(value):  # the common case; jsonschema (precise, slower) only on failure
        return
    validator = _validator(schema_name)
    names = _def_names(schema_name)
    for error in validator.iter_errors(to_json(value)):
        _explain(sink, error, names)


def _explain(sink: Sink, error: Any, names: dict[int, str]) -> None:
    path = tuple(error.absolute_path)
    where = path[-1] if path and isinstance(path[-1], str) else None
    keyword, expected, value, schema = error.validator, error.validator_value, error.instance, error.schema
    label = _LABELS.get(names.get(id(schema), ""), "")
    custom_hint = schema.get("errorMessage") if isinstance(schema, dict) else None
    subject = f"{where}: " if where else ""
    secret = _secretish(path)
    shown = "a value" if secret else short(value)
    hint: str | None

    if label == "ltp offset":
        # One message whatever keyword failed (type, pattern, min/max of the integer form).
        sink.add(
            path, f"ltp: {short(value)} is not a valid offset from the last traded price", offset_hint(value)
        )
    elif keyword == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        for extra in value:
            if extra in allowed:
                continue
            guess = did_you_mean(extra, allowed)
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
        guess = did_you_mean(str(value), options) if isinstance(value, str) else None
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
        sink.add(path, f"{subject}expected {words}, got {'a value' if secret else kind_of(value)}", hint)
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
    elif keyword == "not" and isinstance(schema, dict) and "title" in schema:
        sink.add(path, f"{schema['title']} is not allowed", custom_hint)
    elif keyword == "oneOf" and custom_hint and not secret:  # exclusive alternatives (chase: tick | ticks)
        sink.add(path, f"{subject}{'fits none' if 'not valid' in error.message else 'fits more than one'} "
                 "of its allowed forms", custom_hint)
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


# --- accounts ----------------------------------------------------------------------------------------


def _account_semantics(sink: Sink, doc: dict[str, Any]) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from runner.brokers.registry import REGISTRY

    for name, body in doc.get("accounts", {}).items():
        kind = body["broker"]
        if kind not in REGISTRY:
            guess = did_you_mean(kind, REGISTRY)
            sink.add(
                ("accounts", name, "broker"),
                f"unknown broker kind {short(kind)}",
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
        _account_credentials(sink, name, body)


def _account_credentials(sink: Sink, name: str, body: dict[str, Any]) -> None:
    """Every required credential of the broker at once (an error each: the adapter would fail at login),
    and references whose env var is unset or secret file absent here (a warning: validation may run
    where secrets are not, e.g. in CI; ``runner check`` on the trading host makes it an error)."""
    from runner.brokers.descriptions import credential_problems, describe

    desc = describe(body["broker"])
    if desc is None:
        return
    creds = body.get("credentials") or {}
    missing, unset = credential_problems(name, desc.kind, creds, body.get("options") or {})
    if missing:
        where = ("accounts", name, "credentials") if "credentials" in body else ("accounts", name)
        keys = ", ".join(m.key for m in missing)
        example = missing[0].key
        sink.add(
            where,
            f"account '{name}' ({desc.kind}) lacks required credential(s): {keys}",
            "; ".join(f"{m.key}: {m.meaning}" for m in missing)
            + f". Add each as a reference, e.g. credentials: {{{example}: {{env: "
            + f"{name.upper().replace('-', '_')}_{example.upper()}}}}} or {{file: /run/secrets/...}}",
            key=True,
        )
    for m in unset:
        sink.warn(("accounts", name, "credentials", m.key), f"credential {m.key}: {m.unset}",
                  "set it on the host that trades (runner check fails until it is)")


def validate_accounts_text(text: str, filename: str) -> Report:
    report = Report(filename, kind="accounts")
    loaded = _load(report, text)
    if loaded is None:
        return report
    sink = Sink(loaded)
    if not isinstance(loaded.value, dict):
        sink.add((), "an accounts file is a mapping with version: 1 and accounts:")
    else:
        _schema_errors(sink, loaded.value, ACCOUNTS_SCHEMA)
        if not sink.items:
            _account_semantics(sink, loaded.value)
    report.diagnostics = sorted(sink.items, key=_order)
    report.value = loaded.value
    return report


def validate_alerts_text(text: str, filename: str) -> Report:
    """The alerts file (:mod:`runner.alerts.config`): schema, then every route names a known target."""
    report = Report(filename, kind="alerts")
    loaded = _load(report, text)
    if loaded is None:
        return report
    sink = Sink(loaded)
    if not isinstance(loaded.value, dict):
        sink.add((), "an alerts file is a mapping with version: 1 and targets:")
    else:
        _schema_errors(sink, loaded.value, ALERTS_SCHEMA)
        if not sink.items:
            targets = loaded.value["targets"]
            for i, route in enumerate(loaded.value.get("routes") or []):
                for j, name in enumerate(route["targets"]):
                    if name not in targets:
                        guess = did_you_mean(name, targets)
                        sink.add(
                            ("routes", i, "targets", j),
                            f"unknown target {short(name)}",
                            (f"did you mean '{guess}'? " if guess else "")
                            + f"known: {', '.join(sorted(targets))}",
                        )
    report.diagnostics = sorted(sink.items, key=_order)
    report.value = loaded.value
    return report


def validate_alerts_file(path: str | os.PathLike[str]) -> Report:
    try:
        text = read_text(Path(path))
    except OSError as exc:
        report = Report(str(path), kind="alerts")
        report.diagnostics.append(
            Diagnostic(str(path), 1, 1, Severity.ERROR, f"cannot read alerts file: {exc.strerror}")
        )
        return report
    except YamlError as exc:
        report = Report(str(path), kind="alerts")
        _yaml_diagnostics(report, exc)
        return report
    return validate_alerts_text(text, str(path))


def is_alerts_doc(text: str) -> bool:
    """Cheap sniff: an alerts file has a top-level ``targets:`` key and no ``steps:``."""
    return re.search(r"^targets:", text, re.M) is not None and re.search(r"^steps:", text, re.M) is None


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
        text = read_text(path)
    except OSError as exc:
        report = Report(str(path), kind="accounts")
        report.diagnostics.append(
            Diagnostic(str(path), 1, 1, Severity.ERROR, f"cannot read accounts file: {exc.strerror}")
        )
        return AccountNames(frozenset({"paper"}), str(path)), report
    except YamlError as exc:
        report = Report(str(path), kind="accounts")
        _yaml_diagnostics(report, exc)
        return AccountNames(frozenset({"paper"}), str(path)), report
    report = validate_accounts_text(text, str(path))
    names = {"paper"}
    facts: list[tuple[str, AccountFacts]] = []
    if isinstance(report.value, dict) and isinstance(report.value.get("accounts"), dict):
        names |= set(report.value["accounts"])
        for name, body in report.value["accounts"].items():
            if isinstance(body, dict) and isinstance(body.get("broker"), str):
                endpoints = body.get("endpoints")
                keys = frozenset(map(str, endpoints)) if isinstance(endpoints, dict) else frozenset()
                master = body.get("instruments")
                local = str(path.parent / master) if isinstance(master, str) and master else None
                facts.append((str(name), AccountFacts(body["broker"], keys, local)))
    return AccountNames(frozenset(names), str(path), tuple(facts)), report


# --- entry points --------------------------------------------------------------------------------------


def _order(d: Diagnostic) -> tuple[int, int, int]:
    return d.line, d.col, 0 if d.severity is Severity.ERROR else 1


def _load(report: Report, text: str) -> Loaded | None:
    try:
        return load_yaml(text, report.file)
    except YamlError as exc:
        _yaml_diagnostics(report, exc, text)
        return None


def _yaml_diagnostics(report: Report, exc: YamlError, text: str = "") -> None:
    from runner.playbook.yamlhints import yaml_hint

    for line, col, message in exc.errors:
        if "tag" in message:
            hint: str | None = "quote the value if it is meant as text"
        else:
            line, col, hint = yaml_hint(message, line, col, text)
        report.diagnostics.append(Diagnostic(report.file, line, col, Severity.ERROR, message, hint))


def validate_bytes(
    data: bytes, filename: str, accounts: AccountNames | None = None, *, sniff: bool = False
) -> Report:
    """:func:`validate_text` of a playbook's bytes (``sniff``: or of an accounts file, if it looks like
    one); text that is not UTF-8 is a positioned diagnostic like any other."""
    try:
        text = decode(data, filename)
    except YamlError as exc:
        report = Report(filename)
        _yaml_diagnostics(report, exc)
        return report
    if sniff and is_accounts_doc(text):
        return validate_accounts_text(text, filename)
    if sniff and is_alerts_doc(text):
        return validate_alerts_text(text, filename)
    return validate_text(text, filename, accounts)


def validate_text(text: str, filename: str = "<string>", accounts: AccountNames | None = None) -> Report:
    """Validate one playbook's text. ``accounts=None`` skips the account-exists check."""
    report = Report(filename)
    loaded = _load(report, text)
    if loaded is None:
        return report
    sink = Sink(loaded)
    doc = loaded.value
    if doc is None:
        sink.add((), "empty file", "a playbook needs version: 1, name, timezone and steps")
    elif not isinstance(doc, dict):
        sink.add(
            (),
            f"a playbook is a mapping (key: value lines), got {kind_of(doc)}",
            "start with version: 1, name:, timezone: and steps:",
        )
    else:
        _schema_errors(sink, doc, PLAYBOOK_SCHEMA)
        if not sink.items:
            run_checks(sink, doc, accounts)
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
        report = validate_bytes(Path(name).read_bytes(), name, names, sniff=True)
        if not keep_value:
            report.value = None  # not worth pickling back from a worker
        out.append(report)
    return out


def load_playbook(
    path: str | os.PathLike[str], accounts_file: str | os.PathLike[str] | None = None
) -> Playbook:
    """Validate and build the typed model (for the engine). Raises :class:`PlaybookInvalid`."""
    names, _ = account_names(accounts_file)
    try:
        text = read_text(path)
    except YamlError as exc:
        report = Report(str(path))
        _yaml_diagnostics(report, exc)
        raise PlaybookInvalid(report) from None
    return playbook_from_report(validate_text(text, str(path), names))


def playbook_from_report(report: Report) -> Playbook:
    if not report.ok:
        raise PlaybookInvalid(report)
    from runner.playbook.models import Playbook

    # The schema saw dates as ISO strings (a date where text is expected, e.g. `description: 2026-01-01`,
    # is valid text): give the model the same view. Vars keep their loaded types (dates stay dates).
    value = to_json(report.value)
    if isinstance(report.value, dict) and "vars" in report.value:
        value["vars"] = report.value["vars"]
    return Playbook.model_validate(value)
