"""The CLI as ops use it: exit codes of every command's error paths, one clear line instead of a
traceback, --json everywhere data is printed, help text on every argument, clean output on a pipe and
colour (unless NO_COLOR) on a real terminal."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import COMMANDS, EXIT_BROKER, EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, EXIT_USAGE, main

PLAYBOOK = """\
version: 1
name: ux-demo
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1300}
  - {kind: cancel, id: tidy, all_open: {}}
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a valid playbook, a journal URL and no ambient accounts/risk files."""
    monkeypatch.chdir(tmp_path)
    for var in (
        "RUNNER_ACCOUNTS",
        "RUNNER_RISK",
        "RUNNER_DB",
        "RUNNER_DEBUG",
        "NO_COLOR",
        "RUNNER_UX_TEST_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    (tmp_path / "bad_accounts.yaml").write_text("version: 1\naccounts:\n  x: {broker: paper, bogus: 1}\n")
    (tmp_path / "bad_risk.yaml").write_text("max_notional: -5\n")
    (tmp_path / "broken_risk.yaml").write_text("max_notional: [\n")
    (tmp_path / "not_a_plan.json").write_text('{"format": "something-else"}')
    (tmp_path / "blitz_accounts.yaml").write_text(
        "version: 1\naccounts:\n  desk:\n    broker: blitz\n"
        f"    instruments: {Path(__file__).parent / 'brokers' / 'fixtures' / 'cross' / 'instruments.csv'}\n"
        '    endpoints: {auth: "http://127.0.0.1:9/auth", api: "http://127.0.0.1:9/api"}\n'
        "    credentials: {app_key: {env: RUNNER_UX_TEST_KEY}}\n"
        "    options: {user_id: UX1}\n"
    )
    (tmp_path / "desk.yaml").write_text(PLAYBOOK.replace("timezone:", "account: desk\ntimezone:"))
    return tmp_path


DB = ["--db", "sqlite:///j.db"]

# (argv, exit code, text the one stderr line must contain)
ERROR_PATHS: list[tuple[list[str], int, str]] = [
    # missing files named on the command line: usage (2)
    (["validate", "nope.yaml"], EXIT_USAGE, "no such file"),
    (["run", "nope.yaml", *DB], EXIT_USAGE, "nope.yaml: no such file"),
    (["plan", "nope.yaml", *DB], EXIT_USAGE, "nope.yaml: no such file"),
    (["rehearse", "nope.yaml"], EXIT_USAGE, "nope.yaml: no such file"),
    (["apply", "nope.json", *DB], EXIT_USAGE, "nope.json: no such plan file"),
    (["run", "pb.yaml", "--accounts", "nope.yaml", *DB], EXIT_USAGE, "no such accounts file"),
    (["run", "pb.yaml", "--risk", "nope.yaml", *DB], EXIT_USAGE, "no such risk file"),
    (["serve", "no_such_dir", *DB], EXIT_USAGE, "is not a directory"),
    # invalid input files: 1, positioned file:line:col
    (["run", "pb.yaml", "--accounts", "bad_accounts.yaml", *DB], EXIT_INVALID, "bad_accounts.yaml:3:"),
    (["plan", "pb.yaml", "--accounts", "bad_accounts.yaml", *DB], EXIT_INVALID, "bad_accounts.yaml:3:"),
    (["serve", ".", "--accounts", "bad_accounts.yaml", *DB], EXIT_INVALID, "bad_accounts.yaml:3:"),
    (["validate", "--accounts", "bad_accounts.yaml", "pb.yaml"], EXIT_INVALID, ""),
    (
        ["run", "pb.yaml", "--risk", "bad_risk.yaml", *DB],
        EXIT_INVALID,
        "bad_risk.yaml:1:15: error: max_notional",
    ),
    (["plan", "pb.yaml", "--risk", "bad_risk.yaml", *DB], EXIT_INVALID, "bad_risk.yaml:1:15:"),
    (["rehearse", "pb.yaml", "--risk", "broken_risk.yaml"], EXIT_INVALID, "broken_risk.yaml:2:1:"),
    (["apply", "not_a_plan.json", *DB], EXIT_INVALID, "not a runner plan file"),
    # unknown names on the command line: usage
    (["run", "pb.yaml", "--account", "ghost", *DB], EXIT_USAGE, "unknown account 'ghost'"),
    (["run", "pb.yaml", "--resume", "nosuchrun", *DB], EXIT_USAGE, "no run 'nosuchrun'"),
    (["show", "nosuchrun", *DB], EXIT_USAGE, "no run matches 'nosuchrun'"),
    (["run", "pb.yaml", "--now", "--resume", "x", *DB], EXIT_USAGE, "not allowed with argument --now"),
    (["rehearse", "pb.yaml", "--date", "2026-13-01"], EXIT_USAGE, "not a date"),
    (["history", "--db", "nosuchdialect://x"], EXIT_USAGE, "journal database URL"),
    (["sim", "blitz", "--faults", "nonsense=1"], EXIT_USAGE, "--faults: unknown fault"),
    (["frobnicate"], EXIT_USAGE, "unknown command"),
    # environment: credentials missing, broker unreachable
    (
        ["run", "desk.yaml", "--accounts", "blitz_accounts.yaml", "--now", *DB],
        EXIT_BROKER,
        "RUNNER_UX_TEST_KEY",
    ),
    (["plan", "desk.yaml", "--accounts", "blitz_accounts.yaml", *DB], EXIT_BROKER, "RUNNER_UX_TEST_KEY"),
]


@pytest.mark.parametrize(
    ("argv", "code", "needle"), ERROR_PATHS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_error_paths_exit_with_their_code_and_no_traceback(
    ws: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str
) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert needle in captured.err + (captured.out if argv[0] == "validate" else "")
    if argv[0] != "validate":
        assert captured.out == ""  # nothing half-printed on stdout


def test_broker_unreachable_is_5_with_one_line(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_UX_TEST_KEY", "test-value-not-a-secret")
    assert main(["plan", "desk.yaml", "--accounts", "blitz_accounts.yaml", *DB]) == EXIT_BROKER
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("runner plan:")]
    assert "broker error" in line and "cannot connect" in line and "Traceback" not in err
    assert "test-value-not-a-secret" not in err


def test_locked_journal_is_5(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import runner.journal.db

    url = f"sqlite:///{ws / 'locked.db'}"
    assert main(["history", "--db", url]) == EXIT_OK  # creates the schema
    capsys.readouterr()
    monkeypatch.setattr(runner.journal.db, "BUSY_TIMEOUT_MS", 50)
    url2 = f"sqlite:///{ws / 'locked2.db'}"  # a fresh engine (engines are cached per URL)
    sqlite3.connect(ws / "locked2.db").close()
    holder = sqlite3.connect(ws / "locked2.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert main(["halt", "--db", url2]) == EXIT_BROKER
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert capsys.readouterr().err.strip() == "runner halt: journal database: database is locked"


def test_unexpected_errors_are_one_line_unless_runner_debug(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.journal.store import Journal

    def boom(self: Journal, **kw: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Journal, "list_runs", boom)
    assert main(["history", *DB]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "runner history: internal error: RuntimeError: boom",
        "runner history: this is a bug; run with RUNNER_DEBUG=1 for the traceback",
    ]
    monkeypatch.setenv("RUNNER_DEBUG", "1")
    assert main(["history", *DB]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in boom" in err


# --- machines: --json on stdout, parseable, nothing else there ------------------------------------------


def test_every_data_command_speaks_json(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def js(argv: list[str], code: int = EXIT_OK) -> object:
        assert main(argv) == code, argv
        return json.loads(capsys.readouterr().out)

    assert js(["validate", "--json", "pb.yaml"])["valid"] is True  # type: ignore[index]
    assert js(["validate", "--format", "json", "pb.yaml"])["files"] == 1  # type: ignore[index]
    assert "properties" in js(["schema", "--json"])  # type: ignore[operator]
    assert js(["history", "--json", *DB]) == []
    assert js(["status", "--json", *DB])["control"]["mode"] == "normal"  # type: ignore[index]
    plan = js(["plan", "pb.yaml", "--now", "--json", *DB])
    assert [s["id"] for s in plan["steps"]] == ["bid", "tidy"]  # type: ignore[index]
    run = js(["run", "pb.yaml", "--now", "--json", *DB])
    assert run["status"] == "succeeded"  # type: ignore[index]
    shown = js(["show", run["run_id"], "--json", *DB])  # type: ignore[index]
    assert shown["run"]["run_id"] == run["run_id"]  # type: ignore[index]
    assert js(["rehearse", "pb.yaml", "--date", "2026-12-01", "--json"])["status"] == "succeeded"  # type: ignore[index]
    assert js(["halt", "--json", *DB])["mode"] == "halt"  # type: ignore[index]
    assert js(["resume", "--json", *DB])["mode"] == "normal"  # type: ignore[index]


# --- help ---------------------------------------------------------------------------------------------


def _parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[name][1])
    parser = argparse.ArgumentParser(prog=f"runner {name}")
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_documents_every_argument_with_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    for action in _parser(name)._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.dest} has no help"
    assert main([name, "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "``" not in text, f"raw reST literal in `runner {name} --help`"
    assert "examples:\n  runner " in text and "exit codes:" in text
    assert text.split("\n\n")[1][:1].isupper()  # description starts as a sentence, not `runner x ARGS`:


def test_help_and_validate_start_without_heavy_imports(tmp_path: Path) -> None:
    """`--help` and `validate` must not import the engine, pydantic, sqlalchemy or asyncio (cold start);
    checked by the modules loaded, not by time, so the test cannot flake."""
    heavy = ("runner.engine.core", "runner.engine.gateway", "pydantic", "sqlalchemy", "asyncio")
    heavy += ("runner.journal.store",)
    probe = (
        "import sys, io, contextlib\nfrom runner.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(sys.argv[1:])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    for argv in [[name, "--help"] for name in COMMANDS] + [["validate", str(tmp_path / "pb.yaml")]]:
        out = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True, cwd=tmp_path
        ).stdout
        assert out.strip() == "[]", f"runner {' '.join(argv)} imports {out.strip()}"


# --- terminals ----------------------------------------------------------------------------------------


def test_piped_output_has_no_ansi_and_progress_goes_to_stderr(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rehearse", "pb.yaml", "--date", "2026-12-01"]) == EXIT_OK
    captured = capsys.readouterr()
    assert not ANSI.search(captured.out) and not ANSI.search(captured.err)
    assert "rehearsal of ux-demo" in captured.err and "bid: place" in captured.err  # the timeline
    lines = captured.out.strip().splitlines()
    assert lines[0].endswith(": succeeded") and lines[1].split() == [
        "STEP",
        "KIND",
        "OUTCOME",
        "AT",
        "(IST)",  # the times of day are the playbook's: the heading names the zone
        "DETAIL",
    ]
    starts = {line.index("succeeded") for line in lines[2:]}
    assert starts == {lines[1].index("OUTCOME")}  # aligned columns


def _on_a_pty(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *argv],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    os.close(main_fd)
    return b"".join(chunks).decode()


def test_terminal_gets_colour_aligned_and_no_color_is_respected(ws: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "RUNNER_DEBUG")}
    env.update(TERM="xterm-256color", COLUMNS="120", PYTHONPATH=str(Path(__file__).parents[1]))
    argv = ["rehearse", "pb.yaml", "--date", "2026-12-01"]
    coloured = _on_a_pty(argv, ws, env)
    assert "\x1b[32msucceeded\x1b[0m" in coloured and "▶ bid: place" in coloured
    plain = ANSI.sub("", coloured).replace("\r\n", "\n").splitlines()
    header = next(i for i, line in enumerate(plain) if line.startswith("STEP "))
    assert {line.index("succeeded") for line in plain[header + 1 :] if line} == {
        plain[header].index("OUTCOME")
    }
    env["NO_COLOR"] = "1"
    assert not ANSI.search(_on_a_pty(argv, ws, env))


def test_run_summary_and_history_tables_align(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pb.yaml", "--now", *DB]) == EXIT_OK
    assert main(["history", *DB]) == EXIT_OK
    out = capsys.readouterr().out
    history = out[out.index("RUN ") :].splitlines()
    assert history[1].index("succeeded") == history[0].index("STATUS")


def test_serve_wakes_fires_with_the_daemons_own_default_lead() -> None:
    """`runner serve` without --lead uses DaemonOptions' lead (the one bench/scheduler.py measures)."""
    from runner.commands.serve import DEFAULT_LEAD
    from runner.daemon.scheduler import DaemonOptions

    assert DaemonOptions().lead == DEFAULT_LEAD
