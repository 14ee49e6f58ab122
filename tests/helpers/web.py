"""``runner serve --http`` as a real process for the status page tests: its URL, journal and process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers.sched import playbook_text
from runner.journal.db import make_engine

DEADLINE = 30.0  # generous bound for a loaded CI box; the waits normally end in about a second
CHROMIUM = "/usr/bin/chromium"
PLAYBOOKS = ("tick", "tock", "holiday-check")


def wait_for(what: str, check: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    db_url: str
    engine: sa.Engine
    first_line: str


def write_playbooks(pbdir: Path) -> None:
    pbdir.mkdir()
    (pbdir / "tick.yaml").write_text(playbook_text("tick", "every: 1s"))
    (pbdir / "tock.yaml").write_text(playbook_text("tock", "daily: '23:59:59'", tz="America/New_York"))
    (pbdir / "holiday.yaml").write_text(playbook_text("holiday-check", "daily: '09:30'", calendar="NSE"))


def serve_cmd(pbdir: Path, db_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runner",
        "serve",
        str(pbdir),
        "--db",
        db_url,
        "--shutdown-grace",
        "5",
        *extra,
    ]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    skip = ("RUNNER_ACCOUNTS", "RUNNER_CALENDARS", "RUNNER_HTTP_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env.update(extra or {})
    return env


@contextmanager
def serving(tmp_path: Path, env: Mapping[str, str] | None = None) -> Iterator[Served]:
    pbdir = tmp_path / "pb"
    write_playbooks(pbdir)
    db_url = f"sqlite:///{tmp_path / 'journal.db'}"
    proc = subprocess.Popen(
        serve_cmd(pbdir, db_url, "--http", "127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(env),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first line names the page's URL
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not found:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"no status page URL in {line!r}; stderr: {err[-2000:]}")
        yield Served(proc, found.group(0), db_url, make_engine(db_url), line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=DEADLINE)  # a lingering page worker holding the pipes fails here


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str, Mapping[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), exc.headers


def chromium_or_skip() -> str:
    """The system chromium; under CI=true its absence fails the test instead of skipping it."""
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI=true (.ci/run installs it with apt-get)")
        pytest.skip("no chromium on this machine (apt-get install chromium); the browser tests need it")
    return path
