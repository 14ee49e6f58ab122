"""An unknown account: inside a playbook the file is invalid (1, at file:line:col); named on the command
line it is a usage error (2). The README's exit-code list says the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import EXIT_INVALID, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = (ROOT / "tests/playbook/playbooks_cases/valid/minimal.yaml").read_text()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    monkeypatch.setenv("RUNNER_DB", f"sqlite:///{tmp_path / 'j.db'}")
    (tmp_path / "accounts.yaml").write_text("version: 1\naccounts:\n  desk:\n    broker: paper\n")
    (tmp_path / "pb.yaml").write_text(PLAYBOOK.replace("timezone:", "account: dsek\ntimezone:"))
    return tmp_path


@pytest.mark.parametrize("command", [["run", "--now"], ["plan"], ["validate"]])
def test_unknown_account_inside_a_playbook_is_invalid_input(
    ws: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "pb.yaml", "--accounts", "accounts.yaml"]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert "pb.yaml:4:10: error: unknown account 'dsek'" in captured.out + captured.err


def test_unknown_account_on_the_command_line_is_a_usage_error(ws: Path) -> None:
    assert main(["halt", "--cancel-now", "--account", "nosuch", "--accounts", "accounts.yaml"]) == EXIT_USAGE


def test_readme_exit_codes_say_the_same() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Exit codes") :][:900]
    one = section[section.index("`1`") : section.index("`2`")]
    two = section[section.index("`2`") : section.index("`3`")]
    assert "unknown `account:` named inside a playbook" in one
    assert "unknown account named on the command line" in two
