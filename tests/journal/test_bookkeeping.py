"""Group commit of armed runs' bookkeeping after their sends (runner.journal.bookkeeping), on a real SQLite
journal: runs flushing together share one transaction, written in a worker thread; one run's failing
write fails no other run; any call that is not a queued write sees the queue written first."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from pathlib import Path

import pytest

from runner.journal.bookkeeping import DeferredJournal, bookkeeping_for
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.journal.tables import RunStatus

T0 = dt.datetime(2026, 11, 25, 3, 45, tzinfo=dt.UTC)


def journal_with_runs(tmp_path: Path, *run_ids: str) -> Journal:
    journal = Journal(engine=make_engine(f"sqlite:///{tmp_path / 'journal.db'}"))
    for run_id in run_ids:
        journal.start_run(run_id, playbook="p", account="a", scheduled_for=T0, mode="scheduled", now=T0)
    return journal


async def test_runs_flushing_together_share_one_transaction_off_the_event_loop(tmp_path: Path) -> None:
    journal = journal_with_runs(tmp_path, "r1", "r2", "r3")
    loop_thread = threading.get_ident()
    threads: list[int] = []
    deferred = [DeferredJournal(journal) for _ in range(3)]
    for run_id, d in zip(["r1", "r2", "r3"], deferred, strict=True):
        d.finish_run(run_id, RunStatus.SUCCEEDED, T0)
        d.defer(lambda: threads.append(threading.get_ident()))
    assert journal.get_run("r1").status is RunStatus.RUNNING  # type: ignore[union-attr]  # queued only
    await asyncio.gather(*(d.flush() for d in deferred))
    assert bookkeeping_for(journal.engine).batches == [3]
    assert len(threads) == 3 and loop_thread not in threads
    for run_id in ("r1", "r2", "r3"):
        assert journal.get_run(run_id).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]


async def test_one_runs_failing_write_fails_no_other_run(tmp_path: Path) -> None:
    journal = journal_with_runs(tmp_path, "r1", "r2")
    bad, good = DeferredJournal(journal), DeferredJournal(journal)
    bad.finish_run("r1", RunStatus.SUCCEEDED, T0)

    def broken() -> None:
        raise RuntimeError("disk full")

    bad.defer(broken)
    good.finish_run("r2", RunStatus.SUCCEEDED, T0)
    results = await asyncio.gather(bad.flush(), good.flush(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert journal.get_run("r1").status is RunStatus.RUNNING  # type: ignore[union-attr]  # all or nothing
    assert journal.get_run("r2").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_call_that_is_not_a_queued_write_sees_the_queue_written_first(tmp_path: Path) -> None:
    journal = journal_with_runs(tmp_path, "r1")
    d = DeferredJournal(journal)
    d.finish_run("r1", RunStatus.FAILED, T0, "why")
    run = d.get_run("r1")  # a read: the queue is written first, in order
    assert run is not None and run.status is RunStatus.FAILED


@pytest.mark.parametrize("fails", [False, True])
def test_transactions_inside_a_group_commit_together_or_not_at_all(tmp_path: Path, fails: bool) -> None:
    journal = journal_with_runs(tmp_path, "r1", "r2")
    committer = bookkeeping_for(journal.engine)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext(), committer.fast.group():
        journal.finish_run("r1", RunStatus.SUCCEEDED, T0)  # its own transaction joins the group
        journal.finish_run("r2", RunStatus.SUCCEEDED, T0)
        if fails:
            raise RuntimeError("after both writes")
    want = RunStatus.RUNNING if fails else RunStatus.SUCCEEDED
    assert [journal.get_run(r).status for r in ("r1", "r2")] == [want, want]  # type: ignore[union-attr]
