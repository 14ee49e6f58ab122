"""Safe, strict YAML loading for playbooks and accounts files.

PyYAML composes the node graph (libyaml when available); we construct plain data ourselves so that:

- only plain YAML is accepted: any tag other than the standard scalar/collection tags is an error;
- duplicate keys are errors naming both positions;
- ``true``/``false`` are the only booleans (``ON``, ``NO``, ``Y``, ``yes`` are ticker-safe strings),
  ``09:15`` stays a string (no YAML 1.1 sexagesimal ints), ints with leading zeros stay strings
  (no surprise octal), floats become ``Decimal`` from the source text, ``YYYY-MM-DD`` becomes a date;
- size, nesting depth and alias expansion are bounded, so a "billion laughs" file is refused in
  milliseconds instead of being expanded.

:meth:`Loaded.mark` maps a JSON path back to ``(line, col)`` (1-based) for compiler-style messages.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
MAX_NODES = 100_000  # every node constructed, alias re-visits included
MAX_ALIAS_NODES = 10_000  # nodes constructed again because an alias pointed at them
# Numbers: below 10**15 (a quadrillion: beyond any price, quantity or notional) with at most 10 decimal
# places, so a value divided by a tick or a lot keeps its quotient inside Decimal's 28 exact digits (1e309
# made the tick check raise DivisionImpossible) and every int fits a 64-bit database column.
MAX_INT_DIGITS = 15
MAX_PLACES = 10
_RANGE_HINT = f"write at most {MAX_INT_DIGITS} digits before the decimal point and {MAX_PLACES} after"

PathElem = str | int
Path = tuple[PathElem, ...]

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
DATE, MERGE, SEQ, MAP = _T + "timestamp", _T + "merge", _T + "seq", _T + "map"

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NUMERIC_START = frozenset("0123456789+-.")
_RESOLVED: dict[str | None, str] = {}
_KEY_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, DATE})


class YamlError(ValueError):
    """A file that is not acceptable YAML. ``errors`` holds every problem found as (line, col, message)."""

    def __init__(
        self,
        filename: str,
        line: int,
        col: int,
        message: str,
        errors: Sequence[tuple[int, int, str]] | None = None,
    ) -> None:
        super().__init__(f"{filename}:{line}:{col}: {message}")
        self.filename, self.line, self.col, self.message = filename, line, col, message
        self.errors: list[tuple[int, int, str]] = list(errors) if errors else [(line, col, message)]


def _resolve_plain(value: str) -> str:
    if not value or value[0] in _NUMERIC_START or value[0] in "~nNtTfF<":
        if value in _NULLS:
            return NULL
        if value in _BOOLS:
            return BOOL
        if value == "<<":
            return MERGE
        if _INT_RE.fullmatch(value):
            return INT
        if _FLOAT_RE.fullmatch(value):
            return FLOAT
        if _DATE_RE.fullmatch(value):
            return DATE
    return STR


class _Composer(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Composes nodes only; our resolver replaces YAML 1.1 implicit typing."""

    # Path-based resolvers are unused: C callables instead of two Python calls per node (same result).
    descend_resolver: Any = {}.get  # (parent, index) -> None
    ascend_resolver: Any = tuple  # () -> ()

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return STR
            tag = _RESOLVED.get(value)  # playbooks repeat the same scalars (BUY, NFO, place, ...)
            if tag is None:
                tag = _resolve_plain(value or "")
                if len(_RESOLVED) < 4096:
                    _RESOLVED[value] = tag
            return tag
        return SEQ if kind is SequenceNode else MAP


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Constructor:
    def __init__(self) -> None:
        self.errors: list[tuple[int, int, str]] = []
        self.nodes = 0
        self.alias_nodes = 0
        self.seen: set[int] = set()

    def error(self, node: Node, message: str) -> None:
        self.errors.append((*_pos(node), message))

    def build(self, node: Node, depth: int, aliased: bool) -> Any:
        self.nodes += 1
        if aliased:
            self.alias_nodes += 1
        if self.nodes > MAX_NODES or self.alias_nodes > MAX_ALIAS_NODES or depth > MAX_DEPTH:
            self.refuse(node, depth)
        cls = type(node)
        if cls is ScalarNode:
            return node.value if node.tag == STR else self.scalar(node)
        if id(node) in self.seen:  # a collection reached a second time: an alias
            aliased = True
        else:
            self.seen.add(id(node))
        if cls is SequenceNode:
            if node.tag != SEQ:
                self.error(node, f"tag {node.tag!r} is not allowed: playbooks use plain YAML only")
            build, depth = self.build, depth + 1
            return [build(child, depth, aliased) for child in node.value]
        assert isinstance(node, MappingNode)
        if node.tag != MAP:
            self.error(node, f"tag {node.tag!r} is not allowed: playbooks use plain YAML only")
        return self.mapping(node, depth, aliased)

    def refuse(self, node: Node, depth: int) -> None:
        what = (
            f"nesting deeper than {MAX_DEPTH} levels"
            if depth > MAX_DEPTH
            else "too many aliased nodes (alias expansion bomb?)"
            if self.alias_nodes > MAX_ALIAS_NODES
            else f"more than {MAX_NODES} nodes"
        )
        raise _Abort(node, f"refused: {what}")

    def mapping(self, node: MappingNode, depth: int, aliased: bool) -> dict[str, Any]:
        result: dict[str, Any] = {}
        key_nodes: dict[str, Node] = {}
        merged: dict[str, Any] = {}
        build, child_depth = self.build, depth + 1
        for key_node, value_node in node.value:
            if type(key_node) is not ScalarNode:
                self.error(key_node, "mapping keys must be plain strings")
                continue
            key_tag = key_node.tag
            if key_tag == MERGE:
                sources = value_node.value if type(value_node) is SequenceNode else [value_node]
                for source in sources:
                    if type(source) is not MappingNode:
                        self.error(source, "'<<' merges a mapping or a list of mappings")
                        continue
                    for k, v in self.mapping(source, child_depth, True).items():
                        merged.setdefault(k, v)  # the earliest merge source wins, as in YAML 1.1
                continue
            if key_tag != STR and key_tag not in _KEY_TAGS:
                self.error(key_node, f"tag {key_tag!r} is not allowed: playbooks use plain YAML only")
            key = key_node.value
            if key in key_nodes:
                line, col = _pos(key_nodes[key])
                self.error(key_node, f"duplicate key {key!r} (first defined at {line}:{col})")
                continue
            key_nodes[key] = key_node
            result[key] = build(value_node, child_depth, aliased)
        if merged:
            for k, v in merged.items():
                result.setdefault(k, v)
        return result

    def scalar(self, node: Node) -> Any:
        tag, value = node.tag, node.value
        if tag == STR:
            return value
        if tag == INT:
            if _INT_RE.fullmatch(value):
                if len(value.lstrip("+-")) > MAX_INT_DIGITS:  # before int(): 5,000 digits raise ValueError
                    self.error(node, f"number {value[:40]} is out of range: {_RANGE_HINT}")
                    return value
                return int(value)
            self.error(node, f"{value!r} is not a plain decimal integer")
            return value
        if tag == FLOAT:
            try:
                number = Decimal(value)
            except InvalidOperation:
                self.error(node, f"{value!r} is not a decimal number")
                return value
            if not _in_range(number):
                self.error(node, f"number {value[:40]} is out of range: {_RANGE_HINT}")
                return value
            return number
        if tag == BOOL:
            if value in _BOOLS:
                return _BOOLS[value]
            self.error(node, f"{value!r} is not a boolean: write true or false")
            return value
        if tag == NULL:
            return None
        if tag == DATE:
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                self.error(node, f"{value!r} is not a valid date (YYYY-MM-DD)")
                return value
        if tag == MERGE:
            self.error(node, "'<<' is only valid as a mapping key")
            return value
        self.error(node, f"tag {tag!r} is not allowed: playbooks use plain YAML only")
        return value


def _in_range(number: Decimal) -> bool:
    """Below 10**MAX_INT_DIGITS with at most MAX_PLACES significant decimal places (exact: no context)."""
    _sign, digits, exp = number.as_tuple()
    assert isinstance(exp, int)  # Decimal() of our FLOAT pattern is finite
    trailing_zeros = len(digits) - len(bytes(digits).rstrip(b"\0"))  # they carry no decimal places
    if not any(digits):
        return True
    return number.adjusted() < MAX_INT_DIGITS and exp + trailing_zeros >= -MAX_PLACES


class _Abort(Exception):
    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node, self.message = node, message


def _flow_depth_exceeds(text: str, limit: int) -> bool:
    """Rough nesting check for flow collections (libyaml composes deep nesting in quadratic time)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth = max(0, depth - 1)
    return False


@dataclass
class Loaded:
    """A loaded document: plain data plus the node graph for positions."""

    value: Any
    filename: str
    root: Node | None = field(default=None, repr=False)

    def mark(self, path: Sequence[PathElem]) -> tuple[int, int]:
        """(line, col) of the value at ``path``, or of the nearest ancestor that exists."""
        node, _ = self._walk(path)
        return _pos(node) if node is not None else (1, 1)

    def key_mark(self, path: Sequence[PathElem]) -> tuple[int, int]:
        """(line, col) of the *key* naming the last element of ``path`` (for unknown/duplicate keys)."""
        node, key = self._walk(path)
        if key is not None:
            return _pos(key)
        return _pos(node) if node is not None else (1, 1)

    def _walk(self, path: Sequence[PathElem]) -> tuple[Node | None, Node | None]:
        node, key = self.root, None
        for elem in path:
            if node is None:
                break
            found = _child(node, elem, 0)
            if found is None:
                return node, None
            key, node = found
        return node, key


def _child(node: Node, elem: PathElem, depth: int) -> tuple[Node | None, Node] | None:
    if depth > MAX_DEPTH:
        return None
    if type(node) is SequenceNode:
        if isinstance(elem, int) and 0 <= elem < len(node.value):
            return None, node.value[elem]
        return None
    if type(node) is not MappingNode:
        return None
    merges: list[Node] = []
    for key_node, value_node in node.value:
        if type(key_node) is not ScalarNode:
            continue
        if key_node.tag == MERGE:
            merges.extend(value_node.value if type(value_node) is SequenceNode else [value_node])
        elif key_node.value == elem:
            return key_node, value_node
    for source in merges:
        found = _child(source, elem, depth + 1)
        if found is not None:
            return found
    return None


def read_text(path: str | os.PathLike[str]) -> str:
    """A YAML file's text (playbooks, accounts, risk, calendars): see :func:`decode`. OSError passes."""
    return decode(pathlib.Path(path).read_bytes(), str(path))


def decode(data: bytes, filename: str) -> str:
    """UTF-8 text, or a :class:`YamlError` positioned at the first byte that is not (the same clear error
    wherever a user's file is read, never a UnicodeDecodeError)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as UTF-8"
        raise YamlError(filename, line, col, message) from None


def load_yaml(text: str, filename: str = "<string>") -> Loaded:
    """Parse one YAML document safely. Raises :class:`YamlError` with every problem found."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlError(filename, 1, 1, f"file is larger than {MAX_BYTES // 1024} KiB")
    if _flow_depth_exceeds(text, MAX_DEPTH):
        raise YamlError(filename, 1, 1, f"refused: nesting deeper than {MAX_DEPTH} levels")
    composer = _Composer(text)
    try:
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(filename, exc, text) from None
    except yaml.YAMLError as exc:
        raise YamlError(filename, 1, 1, f"invalid YAML: {exc}") from None
    finally:
        composer.dispose()
    if root is None:
        return Loaded(None, filename, None)
    builder = _Constructor()
    try:
        value = builder.build(root, 0, False)
    except _Abort as abort:
        raise YamlError(filename, *_pos(abort.node), abort.message) from None
    except RecursionError:
        raise YamlError(filename, 1, 1, "refused: nesting too deep") from None
    if builder.errors:
        errors = sorted(builder.errors)
        raise YamlError(filename, *errors[0], errors=errors)
    return Loaded(value, filename, root)


def _syntax_error(filename: str, exc: yaml.MarkedYAMLError, text: str) -> YamlError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "invalid YAML"
    lines = text.splitlines()
    if 0 < line <= len(lines) and lines[line - 1][col - 1 : col] == "\t":
        problem += ": a tab (indent with spaces, not tabs)"
    elif 0 < line <= len(lines) and "${" in lines[line - 1] and "flow" in (exc.context or ""):
        problem += ': inside { } or [ ], quote ${...} references: "${var}"'
    if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        problem = f"{problem} ({exc.context} at {exc.context_mark.line + 1}:{exc.context_mark.column + 1})"
    return YamlError(filename, line, col, f"YAML syntax: {problem}")


def to_json(value: Any) -> Any:
    """The JSON view used for schema validation: dates become ISO strings, everything else as is."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
