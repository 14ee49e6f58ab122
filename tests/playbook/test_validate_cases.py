"""Every file in playbooks_cases/invalid declares its exact errors in leading ``# expect: L:C: message``
lines; the validator must report exactly those (positions exact, message as a substring), no more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.playbook.checks.doc import AccountNames
from runner.playbook.validate import playbook_from_report, validate_text

CASES = Path(__file__).resolve().parent / "playbooks_cases"
ACCOUNTS = AccountNames(frozenset({"paper", "zerodha_main"}), "accounts.yaml")
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$")


def _files(kind: str) -> list[Path]:
    return sorted((CASES / kind).glob("*.yaml"))


def test_corpus_is_not_empty() -> None:
    assert len(_files("valid")) >= 3
    assert len(_files("invalid")) >= 20


@pytest.mark.parametrize("path", _files("valid"), ids=lambda p: p.stem)
def test_valid_case(path: Path) -> None:
    report = validate_text(path.read_text(), str(path), ACCOUNTS)
    assert report.errors == [], "\n".join(d.format() for d in report.errors)
    playbook_from_report(report)  # the typed model accepts what the validator accepts


@pytest.mark.parametrize("path", _files("invalid"), ids=lambda p: p.stem)
def test_invalid_case(path: Path) -> None:
    text = path.read_text()
    expected = [m.groups() for line in text.splitlines() if (m := EXPECT.match(line))]
    assert expected, f"{path.name} declares no '# expect:' lines"
    report = validate_text(text, str(path), ACCOUNTS)
    got = [(d.line, d.col, d.message) for d in report.errors]
    assert len(got) == len(expected), "\n".join(d.format() for d in report.errors)
    for (line, col, message), (g_line, g_col, g_message) in zip(expected, got, strict=True):
        assert (int(line), int(col)) == (g_line, g_col), (
            f"expected {line}:{col}: {message}, got {g_line}:{g_col}"
        )
        assert message in g_message
    assert all(d.file == str(path) for d in report.diagnostics)
