"""Diagnostics and the sink that positions them (shared by the schema step and the semantic checks)."""

from __future__ import annotations

import datetime as dt
import difflib
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.playbook.yamlload import Loaded


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


class Sink:
    """Collects diagnostics for one file, positioned via the loaded document (marks are looked up only
    when something is reported, so the valid path never walks the node graph)."""

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


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    options = [str(o) for o in options]
    folded = {o.casefold(): o for o in options}
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
        close = [folded[c] for c in close]
    return close[0] if close else None


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"whole number {value}"
    if isinstance(value, Decimal):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {short(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def short(value: Any, limit: int = 40) -> str:
    text = str(value) if isinstance(value, Decimal | dt.date) or value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
