# mypy cannot infer lambdas with default arguments (used to bind loop values) appended to list[Check].
# mypy: disable-error-code="misc"
"""A fast yes/no JSON Schema check, compiled to closures (no code generation, no exec).

``jsonschema`` gives precise, complete error lists but costs ~2 ms per playbook; most files are valid.
:func:`compile_schema` turns the subset of 2020-12 our schemas use into plain closures that only
answer "valid?" (~20x faster). :mod:`runner.playbook.validate` asks this first and runs ``jsonschema`` only
for files that fail, so messages stay exact. An unsupported keyword is a compile error, never skipped, and
``tests/playbook/test_validate_props.py`` checks both agree on random mutations.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Check = Callable[[Any], bool]

# Keywords that never affect validity.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "errorMessage",
        "patternErrorMessage",
        "markdownDescription",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
# JSON type -> the Python types of loaded YAML that have it (bool is its own type, never an integer).
# Loaded YAML turns YYYY-MM-DD into a date; JSON (and jsonschema, via yamlload.to_json) sees a string.
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str, dt.date),
    "integer": (int,),
    "number": (int, float, Decimal),
    "boolean": (bool,),
    "null": (type(None),),
}
_OBJECT_KEYS = ("properties", "required", "additionalProperties")


class UnsupportedSchema(ValueError):
    pass


def _is_number(v: Any) -> bool:
    return type(v) in (int, float, Decimal)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _valid_date(v: Any) -> bool:
    if type(v) is dt.date:
        return True
    if type(v) is not str:
        return True
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return False
    return len(v) == 10


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, target: str) -> Check:
        if not target.startswith("#/$defs/"):
            raise UnsupportedSchema(f"only local $defs references are supported, not {target!r}")
        if target not in self.refs:
            box: list[Check] = []
            self.refs[target] = lambda v: box[0](v)  # allows recursive references
            box.append(self.compile(self.root["$defs"][target.rsplit("/", 1)[1]]))
        return self.refs[target]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        checks: list[Check] = []
        objects = False  # properties/required/additionalProperties compile to one check
        for key, arg in schema.items():
            if key in _ANNOTATIONS or key in ("then", "else", "prefixItems"):
                continue
            if key == "type":
                kinds = frozenset(
                    t for name in ([arg] if isinstance(arg, str) else arg) for t in _TYPES[name]
                )
                checks.append(lambda v, ks=kinds: type(v) in ks)
            elif key == "enum":
                if all(type(e) is str for e in arg):
                    allowed = frozenset(arg)
                    checks.append(
                        lambda v, a=allowed: (
                            (type(v) is str and v in a) or (type(v) is dt.date and v.isoformat() in a)
                        )
                    )
                else:
                    checks.append(lambda v, a=arg: any(_equal(v, e) for e in a))
            elif key == "const":
                checks.append(lambda v, c=arg: _equal(v.isoformat() if type(v) is dt.date else v, c))
            elif key == "$ref":
                checks.append(self.ref(arg))
            elif key in _OBJECT_KEYS:
                if not objects:
                    objects = True
                    checks.append(self._object(schema))
            elif key == "propertyNames":
                sub = self.compile(arg)
                checks.append(lambda v, s=sub: type(v) is not dict or all(s(n) for n in v))
            elif key == "items":
                sub = self.compile(arg)
                skip = len(schema.get("prefixItems", ()))
                checks.append(lambda v, s=sub, n=skip: type(v) is not list or all(s(x) for x in v[n:]))
            elif key == "prefixItems":
                pass
            elif key in ("minLength", "maxLength"):
                op = (lambda n, m: n >= m) if key == "minLength" else (lambda n, m: n <= m)
                checks.append(
                    lambda v, n=arg, o=op: (
                        o(len(v if type(v) is str else v.isoformat()), n)
                        if type(v) in (str, dt.date)
                        else True
                    )
                )
            elif key in ("minItems", "maxItems", "minProperties", "maxProperties"):
                kind = {"I": list, "P": dict}[key[3]]
                if key.startswith("min"):
                    checks.append(lambda v, t=kind, n=arg: type(v) is not t or len(v) >= n)
                else:
                    checks.append(lambda v, t=kind, n=arg: type(v) is not t or len(v) <= n)
            elif key == "pattern":
                rx = re.compile(arg)
                checks.append(
                    lambda v, r=rx: (
                        (r.search(v) is not None)
                        if type(v) is str
                        else (r.search(v.isoformat()) is not None)
                        if type(v) is dt.date
                        else True
                    )
                )
            elif key == "minimum":
                checks.append(lambda v, n=arg: not _is_number(v) or v >= n)
            elif key == "exclusiveMinimum":
                checks.append(lambda v, n=arg: not _is_number(v) or v > n)
            elif key == "maximum":
                checks.append(lambda v, n=arg: not _is_number(v) or v <= n)
            elif key == "exclusiveMaximum":
                checks.append(lambda v, n=arg: not _is_number(v) or v < n)
            elif key == "allOf":
                switch = self._switch(arg)
                if switch is not None:
                    checks.append(switch)
                else:
                    checks.extend(self.compile(s) for s in arg)
            elif key == "anyOf":
                subs = [self.compile(s) for s in arg]
                checks.append(lambda v, ss=subs: any(s(v) for s in ss))
            elif key == "oneOf":
                subs = [self.compile(s) for s in arg]
                checks.append(lambda v, ss=subs: sum(1 for s in ss if s(v)) == 1)
            elif key == "not":
                sub = self.compile(arg)
                checks.append(lambda v, s=sub: not s(v))
            elif key == "if":
                cond = self.compile(arg)
                then = self.compile(schema.get("then", True))
                other = self.compile(schema.get("else", True))
                checks.append(lambda v, c=cond, t=then, e=other: t(v) if c(v) else e(v))
            elif key == "format":
                if arg != "date":
                    raise UnsupportedSchema(f"format {arg!r}")
                checks.append(_valid_date)
            else:
                raise UnsupportedSchema(f"keyword {key!r} is not supported by the fast checker")
        if "prefixItems" in schema:
            subs = [self.compile(s) for s in schema["prefixItems"]]
            checks.append(
                lambda v, ss=subs: type(v) is not list or all(s(x) for s, x in zip(ss, v, strict=False))
            )
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        frozen = tuple(checks)

        def run(v: Any) -> bool:
            for check in frozen:  # noqa: SIM110 - a plain loop is measurably faster than all(<genexpr>)
                if not check(v):
                    return False
            return True

        return run

    def _object(self, schema: dict[str, Any]) -> Check:
        """properties + required + additionalProperties as one pass over the mapping (set operations on
        the keys do the bookkeeping in C)."""
        if schema.get("patternProperties"):
            raise UnsupportedSchema("patternProperties")
        props = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        known = frozenset(props)
        required = frozenset(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        closed = extra is False
        extra_check = None if extra is True or closed else self.compile(extra)

        def check(v: Any) -> bool:
            if type(v) is not dict:
                return True
            keys = v.keys()
            if required and not keys >= required:
                return False
            if closed and not keys <= known:
                return False
            for name, value in v.items():
                sub = props.get(name)
                if sub is None:
                    if extra_check is not None and not extra_check(value):
                        return False
                elif not sub(value):
                    return False
            return True

        return check

    def _switch(self, branches: list[Any]) -> Check | None:
        """``allOf`` of ``{if: {required: [k], properties: {k: {const: C}}}, then: S}`` on one key ``k``
        (a tagged union): a dict lookup on ``v[k]`` instead of trying every ``if``. None if not that shape."""
        table: dict[str, Check] = {}
        tag: str | None = None
        for branch in branches:
            if not isinstance(branch, dict) or set(branch) != {"if", "then"}:
                return None
            cond = branch["if"]
            if not isinstance(cond, dict) or set(cond) != {"required", "properties"}:
                return None
            required, props = cond["required"], cond["properties"]
            if not (isinstance(required, list) and len(required) == 1 and isinstance(props, dict)):
                return None
            name = required[0]
            if list(props) != [name] or not isinstance(props[name], dict) or set(props[name]) != {"const"}:
                return None
            const = props[name]["const"]
            if type(const) is not str or const in table or (tag is not None and name != tag):
                return None
            tag = name
            table[const] = self.compile(branch["then"])
        if tag is None:
            return None
        thens = tuple(table.values())

        def check(v: Any) -> bool:
            if type(v) is not dict:  # every `if` holds vacuously for a non-object
                return all(then(v) for then in thens)
            if tag not in v:
                return True
            value = v[tag]
            if type(value) is dt.date:
                value = value.isoformat()
            then = table.get(value) if type(value) is str else None
            return then is None or then(v)

        return check


def compile_schema(schema: dict[str, Any]) -> Check:
    """A function ``instance -> bool`` equivalent to ``Draft202012Validator(schema).is_valid`` on the JSON
    view of ``instance`` (dates compare as their ISO strings, see
    :func:`runner.playbook.yamlload.to_json`)."""
    return _Compiler(schema).compile(schema)
