"""The hand-written JSON Schemas are the published source of truth; the pydantic models must agree.

For every object definition we compare property names, required sets, enum/const values and declared
defaults, so adding a field (or an enum member) in one place and not the other fails here.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from runner.accounts import Account, AccountsFile
from runner.playbook.models import Playbook

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
# Hand-schema objects with no model of their own: the `kind` dispatcher.
DISPATCHERS = {"Step"}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def _deref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and set(schema) <= {"$ref", "description", "default", "title"}:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _enums(schema: Any, root: dict[str, Any], seen: frozenset[str] = frozenset()) -> set[Any]:
    """Every enum/const value reachable from ``schema`` without entering another object definition."""
    found: set[Any] = set()
    if isinstance(schema, list):
        for item in schema:
            found |= _enums(item, root, seen)
        return found
    if not isinstance(schema, dict):
        return found
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        target = root["$defs"][name]
        if "properties" not in target and name not in seen:
            found |= _enums(target, root, seen | {name})
    if "properties" in schema:
        return found  # an object: compared on its own
    found |= {json.dumps(v) for v in schema.get("enum", [])}
    if "const" in schema:
        found.add(json.dumps(schema["const"]))
    for key in ("anyOf", "oneOf", "allOf", "items", "prefixItems", "then", "else", "additionalProperties"):
        if key in schema:
            found |= _enums(schema[key], root, seen)
    return found


def _defaults(prop: dict[str, Any], root: dict[str, Any]) -> Any:
    return _norm(prop.get("default", _deref(prop, root).get("default", "<none>")))


def _norm(value: Any) -> Any:
    """pydantic writes Decimal defaults as strings: compare numbers as numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return value


def _objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in schema.get("$defs", {}).items() if "properties" in d}


def _compare(
    name: str,
    hand: dict[str, Any],
    hand_root: dict[str, Any],
    model: dict[str, Any],
    model_root: dict[str, Any],
    ignore: frozenset[str] = frozenset(),
) -> list[str]:
    problems = []
    hp, mp = set(hand["properties"]), set(model["properties"]) - ignore
    if hp != mp:
        problems.append(
            f"{name}: properties only in schema {sorted(hp - mp)}, only in model {sorted(mp - hp)}"
        )
    hr, mr = set(hand.get("required", [])), set(model.get("required", [])) - ignore
    if hr != mr:
        problems.append(f"{name}: required differs: schema {sorted(hr)} vs model {sorted(mr)}")
    if hand.get("additionalProperties") is not False:
        problems.append(f"{name}: schema must set additionalProperties: false (models forbid extras)")
    for prop in sorted(hp & mp):
        he = _enums(hand["properties"][prop], hand_root)
        me = _enums(model["properties"][prop], model_root)
        if he != me:
            problems.append(f"{name}.{prop}: enum values differ: schema {sorted(he)} vs model {sorted(me)}")
        hd = _defaults(hand["properties"][prop], hand_root)
        if hd != "<none>" and hd != _norm(model["properties"][prop].get("default", "<none>")):
            problems.append(
                f"{name}.{prop}: default {hd!r} in schema, "
                f"{model['properties'][prop].get('default', '<none>')!r} in model"
            )
    return problems


@pytest.mark.parametrize("name", ["playbook.v1.json", "accounts.v1.json", "alerts.v1.json"])
def test_schema_is_valid_2020_12(name: str) -> None:
    schema = _load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://runner.dev/schemas/{name}"
    Draft202012Validator.check_schema(schema)


def test_playbook_schema_matches_models() -> None:
    hand = _load("playbook.v1.json")
    model = Playbook.model_json_schema()
    problems = _compare("Playbook", hand, hand, model, model)
    hand_objects = _objects(hand)
    model_objects = _objects(model)
    for name in sorted(set(hand_objects) - DISPATCHERS - set(model_objects)):
        problems.append(f"{name}: object in schema but no pydantic model")
    for name in sorted(set(model_objects) - set(hand_objects)):
        problems.append(f"{name}: pydantic model but no object in schema")
    for name in sorted(set(hand_objects) & set(model_objects)):
        problems += _compare(name, hand_objects[name], hand, model_objects[name], model)
    # The dispatcher lists exactly the step kinds the models know.
    kinds = {json.loads(v) for v in _enums(hand["$defs"]["Step"]["properties"]["kind"], hand)}
    model_kinds = {n.removesuffix("Step").lower() for n in model_objects if n.endswith("Step")}
    assert kinds == {"place", "spread", "modify", "cancel", "square_off", "wait", "parallel"}
    assert {k.replace("_", "") for k in kinds} == model_kinds
    assert not problems, "\n".join(problems)


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def test_accounts_schema_matches_models() -> None:
    hand = _load("accounts.v1.json")
    account = _model_schema(Account)
    problems = _compare("AccountsFile", hand, hand, _model_schema(AccountsFile), {})
    # In the file an account's name is its key, not a field.
    problems += _compare("Account", hand["$defs"]["Account"], hand, account, account, frozenset({"name"}))
    for name in ("RateLimit", "SecretRef"):
        problems += _compare(name, hand["$defs"][name], hand, account["$defs"][name], account)
    assert not problems, "\n".join(problems)


def test_drift_is_detected() -> None:
    """The comparison itself must fail when a field exists in one place only."""
    hand = _load("playbook.v1.json")
    model = Playbook.model_json_schema()
    hand["$defs"]["PlaceStep"]["properties"]["quantitty"] = {"type": "integer"}
    assert _compare("PlaceStep", hand["$defs"]["PlaceStep"], hand, model["$defs"]["PlaceStep"], model)
    hand = _load("playbook.v1.json")
    hand["$defs"]["OrderType"]["enum"].append("STOP")
    assert _compare("PlaceStep", hand["$defs"]["PlaceStep"], hand, model["$defs"]["PlaceStep"], model)


def test_ltp_offset_syntax_is_one_pattern() -> None:
    """The schema's offset syntax, the model's and the resolver's are the same regex."""
    from runner.playbook.ltp_offsets import OFFSET_PATTERN

    hand = _load("playbook.v1.json")
    assert hand["$defs"]["LtpOffset"]["pattern"] == OFFSET_PATTERN
    model = Playbook.model_json_schema()["$defs"]["LtpPrice"]["properties"]["ltp"]
    assert OFFSET_PATTERN in json.dumps(model).replace("\\\\", "\\")


def test_square_off_no_price_policy_is_one_enum() -> None:
    """``escalation.no_price``: the schema's values are the model's, and both default to ``market``."""
    from runner.playbook.models import Escalation, NoPrice

    prop = _load("playbook.v1.json")["$defs"]["Escalation"]["properties"]["no_price"]
    assert prop["enum"] == [p.value for p in NoPrice]
    assert prop["default"] == Escalation().no_price.value == "market"
