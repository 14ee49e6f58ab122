"""The page worker process: answers what the in-process builder answers, survives its own death, and
the HTML escapes what the journal holds."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa

from runner.engine.killswitch import ControlStore, Mode
from runner.journal.db import make_engine
from runner.journal.fires import Claim, FireState, FireStore
from runner.web.pages import render_status
from runner.web.snapshot import build_status
from runner.web.worker import PageWorker

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def journal(tmp_path: Path) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    engine = make_engine(url)
    store = FireStore(engine, "d1")
    store.claim_many(
        [
            Claim(
                "evil",
                "v1",
                NOW - dt.timedelta(minutes=1),
                "run-1",
                FireState.FAILED,
                "<script>alert(1)</script>",
            )
        ],
        NOW,
    )
    ControlStore(engine).set(Mode.HALT, "<b>stop</b>", "ops", NOW)
    return url, engine


async def test_worker_answers_like_the_builder_and_recovers(tmp_path: Path) -> None:
    url, engine = journal(tmp_path)
    worker = PageWorker(url)
    try:
        status, body = await worker.render("status_json", NOW, "d1")
        assert status == 200
        assert json.loads(body) == json.loads(json.dumps(build_status(engine, NOW), default=str))
        assert (await worker.render("run_html", NOW, "d1", "no-such-run"))[0] == 404
        assert worker._proc is not None
        worker._proc.kill()
        await worker._proc.wait()
        status, body = await worker.render("status_html", NOW, "d1")  # a fresh child
        assert status == 200 and "evil" in body
    finally:
        await worker.aclose()


def test_html_escapes_journal_text(tmp_path: Path) -> None:
    _, engine = journal(tmp_path)
    html = render_status(build_status(engine, NOW), "d1")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>stop</b>" not in html and 'id="halt-banner"' in html
    assert "2026-12-01 09:30:00 UTC" in html  # the halt's time, with its zone
