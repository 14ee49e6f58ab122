"""Output into a pipe whose reader went away (``runner history | head -3``): stop quietly, exit 0."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from runner.cli import EXIT_OK, main


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_is_a_quiet_exit_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["schema"]) == EXIT_OK
    assert capsys.readouterr().err == ""


def test_reader_gone_before_the_output_real_pipe() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_OK, err
    assert err == ""


def test_broken_pipe_elsewhere_is_still_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runner.commands.schema as schema

    def broker_socket_broke(_args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # a broker's connection, not our stdout

    monkeypatch.setattr(schema, "run", broker_socket_broke)
    assert main(["schema"]) == 5
    assert "Broken pipe" in capsys.readouterr().err
