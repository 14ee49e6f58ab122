"""Property tests: random mutations of valid playbooks give a valid report or clean diagnostics, never an
exception; whatever the validator accepts, the pydantic model accepts; the fast schema check agrees with
jsonschema."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.playbook.checks.doc import AccountNames
from runner.playbook.validate import _fast, _validator, playbook_from_report, validate_text
from runner.playbook.yamlload import YamlError, load_yaml, to_json

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "playbooks").glob("*.yaml")) + sorted(
    (ROOT / "tests/playbook/playbooks_cases/valid").glob("*.yaml")
)
DOCS = [load_yaml(p.read_text(), str(p)).value for p in SOURCES]
TEXTS = [p.read_text() for p in SOURCES]
ACCOUNTS = AccountNames(frozenset({"paper"}))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100_000),
    st.decimals(-10, 30000, places=2, allow_nan=False),
    st.sampled_from(
        [
            "",
            "BUY",
            "LIMIT",
            "09:15",
            "9:15",
            "25:00",
            "${lots}",
            "${nope}",
            "${lots * 75}",
            "30s",
            "NFO",
            "place",
            "spread",
            "entry",
            "open",
            "skip",
            "run-within 1m",
            "ON",
            "0",
            "x" * 70,
        ]
    ),
    st.dates(dt.date(2026, 1, 1), dt.date(2028, 12, 31)),
    st.lists(st.sampled_from(["NFO", "MIS", "filled", 1]), max_size=3),
    st.sampled_from(
        [{"ltp": "-1%"}, {"ltp": "2%"}, {"ltp": 0}, {"ltp": 5}, {"ltp": "-3 ticks"}, {"lpt": "+1"}]
    ).map(dict),
    st.dictionaries(
        st.sampled_from(["kind", "id", "order", "side", "junk"]),
        st.sampled_from(["x", 1, "place"]),
        max_size=2,
    ),
)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Decimal, lambda d, v: d.represent_scalar("tag:yaml.org,2002:float", str(v)))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "rename", "replace", "swap", "insert"]))
        if op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(last, str):
            new = draw(st.sampled_from([last + "x", last[:-1], last.upper(), "junk", last.replace("_", "")]))
            parent[new] = parent.pop(last)
        elif op == "replace":
            parent[last] = draw(JUNK)
        elif op == "swap":
            other = draw(st.sampled_from(paths))
            try:
                a, b = _get(doc, path), _get(doc, other)
                parent[last], _get(doc, other[:-1])[other[-1]] = copy.deepcopy(b), copy.deepcopy(a)
            except (KeyError, IndexError, TypeError):
                pass
        elif op == "insert" and isinstance(_get(doc, path), dict):
            _get(doc, path)[draw(st.sampled_from(["junk", "kind", "at", "lots", "price", "order"]))] = draw(
                JUNK
            )
    return doc


def _check(text: str) -> None:
    report = validate_text(text, "m.yaml", ACCOUNTS)
    lines = text.count("\n") + 2
    for d in report.diagnostics:
        assert 1 <= d.line <= lines and d.col >= 1 and d.message
        assert d.format().startswith(f"m.yaml:{d.line}:{d.col}: ")
    if report.ok:
        playbook_from_report(report)  # never accepted by the validator but refused by the model


@SETTINGS
@given(mutated())
def test_structural_mutations_give_clean_reports(doc: Any) -> None:
    _check(yaml.dump(doc, Dumper=_Dumper, sort_keys=False))


@SETTINGS
@given(st.sampled_from(TEXTS), st.data())
def test_text_mutations_give_clean_reports(text: str, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["cut", "insert", "dup"]))
        if op == "cut":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 20)) :]
        elif op == "insert":
            text = (
                text[:pos]
                + data.draw(
                    st.sampled_from(
                        [
                            "\t",
                            ":",
                            "- ",
                            "{",
                            "}",
                            "&a ",
                            "*a",
                            "!!python/x ",
                            "\n  ",
                            "'",
                            "#",
                            "<<: *a\n",
                            "é",
                            "\x00",
                        ]
                    )
                )
                + text[pos:]
            )
        else:
            text = text[:pos] + text[max(0, pos - 40) : pos] + text[pos:]
    _check(text)


@SETTINGS
@given(mutated())
def test_fast_check_agrees_with_jsonschema(doc: Any) -> None:
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False)
    try:
        value = load_yaml(text).value
    except YamlError:
        return
    assert _fast("playbook.v1.json")(value) == _validator("playbook.v1.json").is_valid(to_json(value))
