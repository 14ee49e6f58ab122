"""Hints for YAML syntax errors, so they read like every other validation error: what is wrong in
playbook terms and how to fix it, at file:line:col. The parser's own message stays as it is; the hint
says which of the common slips it most likely is (a tab, bad indentation, an unquoted ``: `` in a value,
an unclosed quote or bracket, a duplicate key)."""

from __future__ import annotations

import re
from typing import NamedTuple

_CONTEXT_AT = re.compile(r"\(while [^)]*? at (\d+):(\d+)\)")
_VALUE_WITH_COLON = re.compile(r"^\s*(?:- )?[\w.-]+:\s+[^\"'{\[#].*?:(\s|$)")


class YamlHint(NamedTuple):
    line: int  # where the diagnostic is best placed (the parser's position, or where the slip began)
    col: int
    hint: str | None


def yaml_hint(message: str, line: int, col: int, text: str) -> YamlHint:
    """The hint for one parser error at ``line``:``col`` (1-based) of ``text``."""
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    context = _CONTEXT_AT.search(message)
    opened = (int(context.group(1)), int(context.group(2))) if context else None
    if "tab" in message and "\t" in text:
        return YamlHint(line, col, "YAML indents with spaces only: replace the tab with spaces (2 per level)")
    if "duplicate key" in message:
        return YamlHint(line, col, "a key may appear once per mapping: delete or rename one of them")
    if "quoted scalar" in message and opened is not None:
        quote = _char_at(lines, *opened) or '"'
        return YamlHint(*opened, f"unclosed quote: add the closing {quote} to the string opened here")
    if "flow mapping" in message or "flow sequence" in message:
        close, what = ("}", "{...} mapping") if "flow mapping" in message else ("]", "[...] list")
        where = f" at {opened[0]}:{opened[1]}" if opened else ""
        return YamlHint(line, col, f"unclosed {what} opened{where}: add {close} (or a comma between items)")
    if "mapping values are not allowed" in message and _VALUE_WITH_COLON.match(here):
        key, _, value = here.strip().removeprefix("- ").partition(":")
        return YamlHint(line, col, f'a value containing ": " must be quoted: {key}: "{value.strip()}"')
    if any(m in message for m in ("expected key", "'-' indicator", "expected <block end>", "mapping values")):
        indent = len(here) - len(here.lstrip(" "))
        if opened is not None:
            base = _indent_of(lines, opened[0])
            return YamlHint(
                line,
                col,
                f"indentation: line {line} is indented {indent} spaces, but the block it belongs to "
                f"(from line {opened[0]}) is indented {base}; align it with its sibling keys",
            )
        return YamlHint(line, col, "indentation: align the line with its sibling keys (spaces only)")
    if "could not find expected ':'" in message:
        return YamlHint(line, col, "a key needs ': ' after it (key: value), or quote the text")
    return YamlHint(line, col, None)


def _char_at(lines: list[str], line: int, col: int) -> str | None:
    if 0 < line <= len(lines) and 0 < col <= len(lines[line - 1]):
        return lines[line - 1][col - 1]
    return None


def _indent_of(lines: list[str], line: int) -> int:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    stripped = text.lstrip(" ")
    indent = len(text) - len(stripped)
    return indent + 2 if stripped.startswith("- ") else indent  # a list item's keys sit after "- "
