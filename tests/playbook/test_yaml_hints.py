"""YAML syntax errors get a hint, like every other validation error, at file:line:col: a tab, bad
indentation, an unquoted ``: `` in a value, an unclosed quote or bracket, a duplicate key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import main
from runner.playbook.validate import validate_text

BASE = (
    "version: 1\nname: t\ntimezone: Asia/Kolkata\nsteps:\n  - kind: place\n    id: buy\n"
    "    instrument: {exchange: NSE, symbol: RELIANCE}\n    side: BUY\n    quantity: 1\n"
)
CASES = {
    "tab": (BASE.replace("    side: BUY", "\tside: BUY"), (8, 1), "spaces only"),
    "too deep": (BASE.replace("    side: BUY", "      side: BUY"), (8, 7), "indented 6 spaces"),
    "too shallow": (BASE.replace("    side: BUY", "   side: BUY"), (8, 4), "is indented 4"),
    "colon in value": (
        BASE.replace("name: t", "name: t\ndescription: buy: at open"),
        (3, 17),
        'must be quoted: description: "buy: at open"',
    ),
    "unclosed double quote": (BASE.replace("name: t", 'name: "t'), (2, 7), 'add the closing "'),
    "unclosed single quote": (BASE.replace("name: t", "name: 't"), (2, 7), "add the closing '"),
    "unclosed brace": (BASE.replace("RELIANCE}", "RELIANCE"), (8, 9), "{...} mapping opened at 7:17: add }"),
    "unclosed bracket": (BASE.replace("name: t", "name: t\ntags: [a, b"), (4, 9), "opened at 3:7: add ]"),
    "duplicate key": (BASE.replace("name: t", "name: t\nname: u"), (3, 1), "once per mapping"),
}


@pytest.mark.parametrize("case", CASES)
def test_yaml_syntax_error_has_position_and_hint(case: str) -> None:
    text, (line, col), hint = CASES[case]
    report = validate_text(text, "t.yaml")
    first = report.errors[0]
    assert (first.line, first.col) == (line, col)
    assert first.hint is not None and hint in first.hint, first.hint


def test_validate_prints_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text(CASES["colon in value"][0])
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3:17: error: YAML syntax" in out
    assert 'hint: a value containing ": " must be quoted' in out
