"""``runner validate`` / ``runner schema`` through the real entry point (in process and as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.accounts import find_accounts_file
from runner.cli import main
from runner.playbook.validate import _find_accounts_file, load_playbook, validate_paths

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
INVALID = ROOT / "tests" / "playbook" / "playbooks_cases" / "invalid"


@pytest.fixture(autouse=True)
def _no_ambient_accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def test_every_shipped_playbook_is_valid_and_builds(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(PLAYBOOKS.glob("*.yaml"))
    assert len(files) >= 6
    assert main(["validate", str(PLAYBOOKS)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"{len(files)} files valid")
    for path in files:
        assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/playbook.v1.json\n")
        playbook = load_playbook(path)
        assert playbook.timezone == "Asia/Kolkata"
        for step in playbook.steps:  # quantities resolve to whole lots
            for order in [step, *getattr(step, "legs", [])]:
                if getattr(order, "lots", None) is not None:
                    assert playbook.resolve_int(order.lots) >= 1


def test_all_errors_at_once_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((INVALID / "lot_size_and_order_types.yaml").read_text())
    assert main(["validate", str(bad), str(PLAYBOOKS / "iron_condor.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    errors = [line for line in out if ": error: " in line]
    assert len(errors) == 6
    assert errors[0].startswith(f"{bad}:") and "is not a multiple of the lot size 75" in errors[0]
    assert any(line.strip().startswith("hint: ") for line in out)
    assert out[-1] == "1 of 2 files invalid: 6 error(s), 0 warning(s)"
    assert "\033[" not in "\n".join(out)  # not a TTY: no colour


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "json", str(INVALID / "unknown_key_typo.yaml")]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["files"] == 1 and doc["errors"] == 1
    diag = doc["reports"][0]["diagnostics"][0]
    assert (diag["line"], diag["col"], diag["severity"]) == (14, 5, "error")
    assert diag["message"] == "unknown key 'quantitty'" and diag["hint"] == "did you mean 'quantity'?"
    assert diag["path"] == ["steps", 0, "quantitty"]
    assert main(["validate", "--format", "json", str(PLAYBOOKS / "cancel_all_open.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert main(["validate", "--format", "xml", str(PLAYBOOKS)]) == 2
    assert main(["validate", "--accounts", str(tmp_path / "nope.yaml"), str(PLAYBOOKS)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2


def test_accounts_file_known_names_and_inline_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        "version: 1\naccounts:\n  desk:\n    broker: blitz\n    credentials:\n"
        "      api_key: {env: BLITZ_KEY}\n      secret: s3cr3t-value\n"
    )
    book = tmp_path / "book.yaml"
    book.write_text(
        (PLAYBOOKS / "cancel_all_open.yaml").read_text().replace("timezone:", "account: desk\ntimezone:")
    )
    assert main(["validate", "--accounts", str(accounts), str(book)]) == 1
    out = capsys.readouterr().out
    assert f"{accounts}:7:15: error: secret: expected a mapping, got a value" in out
    assert "{env: VAR_NAME}" in out and "s3cr3t" not in out  # never echo a secret
    accounts.write_text(
        "version: 1\naccounts:\n  desk:\n    broker: blitz\n    credentials:\n"
        "      app_key: {env: BLITZ_KEY}\n      user_id: {env: BLITZ_USER}\n"
    )
    assert main(["validate", "--accounts", str(accounts), str(book)]) == 0
    book.write_text(book.read_text().replace("account: desk", "account: dsek"))
    assert main(["validate", "--accounts", str(accounts), str(book)]) == 1
    assert "unknown account 'dsek'" in capsys.readouterr().out


def test_accounts_lookup_matches_runner_accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _find_accounts_file(None) == find_accounts_file(None) is None
    (tmp_path / "accounts.yaml").write_text("version: 1\n")
    assert _find_accounts_file(None) == find_accounts_file(None) == Path("accounts.yaml")
    monkeypatch.setenv("RUNNER_ACCOUNTS", "/x/a.yaml")
    assert _find_accounts_file(None) == find_accounts_file(None) == Path("/x/a.yaml")
    assert _find_accounts_file("b.yaml") == find_accounts_file("b.yaml") == Path("b.yaml")


def test_directory_recursion_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "b" / "one.yml").write_text((PLAYBOOKS / "cancel_all_open.yaml").read_text())
    (tmp_path / ".git" / "x.yaml").write_text("garbage: [")
    (tmp_path / "notes.txt").write_text("x")
    reports = validate_paths([tmp_path])
    assert [Path(r.file).name for r in reports] == ["one.yml"] and reports[0].ok


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "https://runner.dev/schemas/playbook.v1.json"
    assert main(["schema", "--accounts"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "https://runner.dev/schemas/accounts.v1.json"


def test_subprocess_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("RUNNER_ACCOUNTS", None)
    ok = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(PLAYBOOKS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(INVALID)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stdout.strip().splitlines()[-1].startswith(f"{len(list(INVALID.glob('*.yaml')))} of ")


def test_parallel_matches_serial(tmp_path: Path) -> None:
    for i, path in enumerate([*sorted(PLAYBOOKS.glob("*.yaml")), *sorted(INVALID.glob("*.yaml"))]):
        (tmp_path / f"{i:02d}-{path.name}").write_text(path.read_text())
    serial = validate_paths([tmp_path], jobs=1)
    parallel = validate_paths([tmp_path], jobs=2)
    assert [(r.file, r.diagnostics) for r in serial] == [(r.file, r.diagnostics) for r in parallel]
    assert sum(not r.ok for r in serial) == len(list(INVALID.glob("*.yaml")))
