"""``runner serve`` as a real process: fires through the engine on the paper broker, honours a halt written
by another process, reports status, and exits 0 on SIGTERM leaving no fire half-claimed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.sched import playbook_text

from runner.engine.killswitch import ControlStore, Mode
from runner.journal.db import make_engine
from runner.journal.fires import FireState, fires
from runner.liveness import ProcessRegistry, processes

DEADLINE = 30.0  # generous bound for a loaded CI box; the waits normally end in about a second


def wait_for(what: str, check: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def runner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, sa.Engine]]:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "tick.yaml").write_text(playbook_text("tick", "every: 1s"))
    (pbdir / "broken.yaml").write_text("version: 1\nname: broken\n")
    db_url = f"sqlite:///{tmp_path / 'journal.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_ACCOUNTS", "RUNNER_CALENDARS")}
    proc = subprocess.Popen(
        runner_cmd("serve", str(pbdir), "--db", db_url, "--shutdown-grace", "5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        yield proc, db_url, make_engine(db_url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def rows(engine: sa.Engine) -> list[dict[str, object]]:
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(fires).order_by(fires.c.scheduled_for))]
    except sa.exc.OperationalError:  # table not created yet
        return []


def test_serve_fires_honours_halt_and_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], str, sa.Engine],
) -> None:
    proc, db_url, engine = served
    wait_for("a successful fire", lambda: any(r["state"] == FireState.SUCCEEDED for r in rows(engine)))
    # the owner of the runs it executes is a live process in the journal (judged by `run` elsewhere)
    registry = ProcessRegistry(engine)
    with engine.connect() as conn:
        [serve_row] = conn.execute(sa.select(processes).where(processes.c.command == "serve")).all()
    assert serve_row.pid == proc.pid and registry.is_alive(serve_row.token)

    status = subprocess.run(
        runner_cmd("status", "--db", db_url, "--json"), capture_output=True, text=True, check=True
    )
    data = json.loads(status.stdout)
    assert data["control"]["mode"] == "normal"
    assert list(data["next_fires"]) == ["tick"]
    [daemon] = [d for d in data["daemons"] if d["alive"]]
    assert list(daemon["invalid"]) and daemon["invalid"][next(iter(daemon["invalid"]))]
    assert data["last_outcomes"]["tick"]["state"] in ("succeeded", "running", "claimed")

    halted = subprocess.run(
        runner_cmd("halt", "--db", db_url, "--reason", "test halt"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "HALTED" in halted.stdout and "1 running daemon" in halted.stdout
    since = ControlStore(engine).get().since
    assert since is not None
    wait_for(
        "a fire skipped for the halt",
        lambda: any(
            r["state"] == FireState.SKIPPED and "test halt" in str(r["outcome"]) for r in rows(engine)
        ),
    )
    ControlStore(engine).set(Mode.NORMAL, None, "test", since)

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert "1 playbooks scheduled, 1 invalid" in out and "runner serve: stopped" in out
    assert "broken.yaml: invalid" in out
    left = [r for r in rows(engine) if r["state"] in (FireState.CLAIMED, FireState.RUNNING)]
    assert left == []
    after = json.loads(
        subprocess.run(
            runner_cmd("status", "--db", db_url, "--json"), capture_output=True, text=True, check=True
        ).stdout
    )
    assert not any(d["alive"] for d in after["daemons"])
    with engine.connect() as conn:
        assert conn.execute(sa.select(processes.c.stopped_at)).scalar_one() is not None
