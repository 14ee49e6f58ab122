"""runner.journal.joined: queued after-send writes ride the next call's transaction, on a real SQLite
journal; a call that fails rolls back only itself, the queued rows still land."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from runner.journal.db import make_engine
from runner.journal.fastpath import _Fast
from runner.journal.joined import JoinedJournal
from runner.journal.store import Journal
from runner.journal.tables import RunStatus, events

T0 = dt.datetime(2026, 11, 25, 3, 45, tzinfo=dt.UTC)


def _journal(tmp_path: Path, *run_ids: str) -> Journal:
    journal = Journal(engine=make_engine(f"sqlite:///{tmp_path / 'journal.db'}"))
    for run_id in run_ids:
        journal.start_run(run_id, playbook="p", account="a", scheduled_for=T0, mode="scheduled", now=T0)
    return journal


def test_queued_writes_join_the_next_calls_transaction(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    journal = _journal(tmp_path, "r1", "r2")
    joined = JoinedJournal(journal)
    commits: list[int] = []
    original = _Fast.commit
    monkeypatch.setattr(_Fast, "commit", lambda self, cur: (commits.append(1), original(self, cur))[1])
    joined.finish_run("r1", RunStatus.SUCCEEDED, T0)  # queued (a write after a send)
    assert commits == [] and journal.get_run("r1").status is RunStatus.RUNNING  # type: ignore[union-attr]
    joined.finish_run("r2", RunStatus.FAILED, T0)
    joined.record_event("r2", "note", "next", T0)  # not queued: writes the queue and itself, one commit
    assert commits == [1]
    assert journal.get_run("r1").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert journal.get_run("r2").status is RunStatus.FAILED  # type: ignore[union-attr]
    joined.write_queued()  # nothing left: no commit
    assert commits == [1]


class Refusing(Journal):
    def note_then_fail(self, run_id: str) -> None:
        self.record_event(run_id, "note", "half done", T0)
        raise RuntimeError("refused")


def test_a_failing_call_rolls_back_only_itself(tmp_path: Path) -> None:
    journal = Refusing(engine=make_engine(f"sqlite:///{tmp_path / 'journal.db'}"))
    journal.start_run("r1", playbook="p", account="a", scheduled_for=T0, mode="scheduled", now=T0)
    joined = JoinedJournal(journal)
    joined.finish_run("r1", RunStatus.SUCCEEDED, T0)
    with pytest.raises(RuntimeError):
        joined.note_then_fail("r1")
    assert journal.get_run("r1").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]  # queued: landed
    assert journal.rows(events, "r1") == []  # the failing call's own write: rolled back
