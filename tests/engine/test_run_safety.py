"""Safety across runs (issue 11): one run id in one process, dead runs settle, unexpected adapter errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess

import pytest
from helpers.engine import at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.engine.interrupt import Interrupt
from runner.errors import Unavailable
from runner.journal.errors import RunBusy
from runner.journal.tables import RunStatus, StepOutcome
from runner.liveness import ProcessIdentity, host_id

ENTRY_EXIT = """
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
  - {kind: cancel, id: tidy, all_open: {}}
  - {kind: square_off, id: sq}
"""


def dead_token() -> str:
    """The token of a process of this host that has exited (its pid no longer exists)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return ProcessIdentity(host_id(), proc.pid, "1").token


def _start(env, owner, run_id="r1", account="paper"):
    return env.journal.start_run(
        run_id, playbook="p", account=account, scheduled_for=at(0, 0), mode="run", now=at(9, 0), owner=owner
    )


def test_a_run_running_under_a_live_process_is_refused_to_another(tmp_path):
    env = make_env(tmp_path)
    me = ProcessIdentity.current().token
    _start(env, me)
    with pytest.raises(RunBusy) as refused:
        _start(env, dead_token())  # any other process
    assert (
        refused.value.holder == me
        and "r1" in str(refused.value)
        and f"pid {ProcessIdentity.current().pid}" in str(refused.value)
    )
    assert env.journal.get_run("r1").starts == 1 and env.journal.get_run("r1").owner == me


def test_a_dead_owners_run_is_taken_over_by_compare_and_set(tmp_path):
    env = make_env(tmp_path)
    gone = dead_token()
    _start(env, gone)
    me = ProcessIdentity.current().token
    run = _start(env, me)
    assert run.resumed and run.owner == me and run.starts == 2


def test_losing_the_race_to_create_or_reopen_a_run_is_refused(tmp_path, monkeypatch):
    env = make_env(tmp_path)
    gone, other = dead_token(), dead_token()
    _start(env, gone)
    real_get_run = env.journal.get_run
    seen = real_get_run("r1")
    # another process reopened it between our read (owner: gone) and our write
    monkeypatch.setattr(env.journal, "get_run", lambda run_id: seen)
    with env.journal.engine.begin() as c:
        c.exec_driver_sql("UPDATE runs SET owner = ? WHERE run_id = 'r1'", (other,))
    with pytest.raises(RunBusy):
        _start(env, ProcessIdentity.current().token)
    # and a concurrent INSERT that loses counts the same
    monkeypatch.setattr(env.journal, "get_run", lambda run_id: None)
    with pytest.raises(RunBusy):
        _start(env, ProcessIdentity.current().token)
    monkeypatch.setattr(env.journal, "get_run", real_get_run)
    assert real_get_run("r1").owner == other and real_get_run("r1").starts == 1


def test_dead_runs_of_the_account_are_closed_interrupted_live_ones_kept(tmp_path):
    env = make_env(tmp_path)
    me = ProcessIdentity.current().token
    _start(env, dead_token(), "dead")
    _start(env, me, "live")
    _start(env, dead_token(), "other-account", account="acct2")
    closed = env.journal.close_dead_runs("paper", at(9, 5), closer="run x")
    assert [r.run_id for r in closed] == ["dead"]
    dead = env.journal.get_run("dead")
    assert (
        dead.status is RunStatus.INTERRUPTED
        and "is gone" in dead.message
        and "closed by run x" in dead.message
    )
    assert env.journal.get_run("live").status is RunStatus.RUNNING
    assert env.journal.get_run("other-account").status is RunStatus.RUNNING
    assert [r.run_id for r in env.journal.dead_runs()] == ["other-account"]


def test_ownerless_runs_count_as_dead_only_after_ten_quiet_minutes(tmp_path):
    env = make_env(tmp_path)
    now = env.journal.processes.db_now()
    env.journal.start_run(
        "old",
        playbook="p",
        account="paper",
        scheduled_for=at(0, 0),
        mode="run",
        now=now - dt.timedelta(minutes=11),
    )
    env.journal.start_run(
        "recent",
        playbook="p",
        account="paper",
        scheduled_for=at(0, 0),
        mode="run",
        now=now - dt.timedelta(minutes=1),
    )
    closed = env.journal.close_dead_runs("paper", now, closer="run x")
    assert [r.run_id for r in closed] == ["old"]
    assert "no owner recorded" in env.journal.get_run("old").message
    assert env.journal.get_run("recent").status is RunStatus.RUNNING


async def test_a_killed_runs_intents_are_reconciled_by_the_accounts_next_run(tmp_path):
    env = make_env(tmp_path)
    first = await env.run(playbook(ENTRY_EXIT.split("  - {kind: cancel")[0]))
    (intent,) = env.journal.intents(run_id=first.run_id)
    # as if its process was SIGKILLed mid-run: RUNNING, its order journaled pending_new
    with env.journal.engine.begin() as c:
        c.exec_driver_sql(
            "UPDATE runs SET status = 'running', finished_at = NULL, owner = ? WHERE run_id = ?",
            (dead_token(), first.run_id),
        )
        c.exec_driver_sql("UPDATE order_intents SET status = 'pending_new'")
    second = await env.run(playbook(ENTRY_EXIT, name="t2"))
    dead = env.journal.get_run(first.run_id)
    assert dead.status is RunStatus.INTERRUPTED and second.run_id in dead.message
    assert (
        env.journal.get_intent(intent.client_order_id).status.value == "cancelled"
    )  # looked up, then tidied


async def test_an_unexpected_adapter_exception_fails_its_step_and_exit_steps_still_run(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())

    for _ in range(20):  # every cancel, its retries included: e.g. Kotak's AMO cancel without a symbol
        broker.fail("cancel", ValueError("AMO cancel needs the trading symbol"))
    pb = playbook(ENTRY_EXIT + "  - {kind: place, id: after, instrument: fut, side: BUY, lots: 1}\n")
    report = await env.run(pb, broker=broker)
    steps = {s.step_id: s for s in report.steps}
    assert steps["tidy"].outcome is StepOutcome.FAILED and "1 still open" in steps["tidy"].message
    assert (
        steps["sq"].outcome.is_final and steps["sq"].outcome is not StepOutcome.SKIPPED
    )  # the exit step ran
    assert steps["after"].outcome is StepOutcome.SKIPPED
    assert env.journal.get_run(report.run_id).status is RunStatus.FAILED
    faults = [c for c in env.journal.calls(run_id=report.run_id) if c["method"] == "cancel"]
    assert faults and all(c["error"] == "AdapterFault" and "ValueError" in c["error_message"] for c in faults)


async def test_an_unexpected_exception_in_a_step_fails_it_and_the_run_is_closed(tmp_path, monkeypatch):
    from runner.engine.steps import dispatch

    async def broken(ctx, step):
        raise KeyError("no such leg")

    monkeypatch.setitem(dispatch.HANDLERS, "cancel", broken)
    env = make_env(tmp_path)
    report = await env.run(playbook(ENTRY_EXIT))
    steps = {s.step_id: s for s in report.steps}
    assert steps["tidy"].outcome is StepOutcome.FAILED
    assert steps["tidy"].message == "unexpected error: KeyError: 'no such leg'"
    assert steps["sq"].outcome is StepOutcome.SUCCEEDED  # exit steps still run
    assert env.journal.get_run(report.run_id).status is RunStatus.FAILED


async def test_a_run_that_cannot_connect_is_closed_failed_with_the_reason(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())
    for _ in range(20):  # every attempt
        broker.fail("connect", Unavailable("broker unreachable"))
    with pytest.raises(Unavailable):
        await env.run(playbook(ENTRY_EXIT), broker=broker)
    (run,) = env.journal.list_runs()
    assert (
        run.status is RunStatus.FAILED
        and "before its first step" in run.message
        and "unreachable" in run.message
    )


async def test_a_journal_failing_mid_run_leaves_the_run_closed_failed_not_running(tmp_path, monkeypatch):
    """A full disk refuses the step's write; the error escapes the run (exit 5 at the CLI) and the run
    is closed FAILED with the reason where the journal still takes that one small update."""
    import sqlite3

    from runner.journal.store import Journal

    env = make_env(tmp_path)
    real = Journal.finish_step

    def full(self, run_id, step_id, *args, **kw):
        if step_id == "tidy":
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, run_id, step_id, *args, **kw)

    monkeypatch.setattr(Journal, "finish_step", full)
    with pytest.raises(sqlite3.OperationalError):
        await env.run(playbook(ENTRY_EXIT))
    (run,) = env.journal.list_runs()
    assert run.status is RunStatus.FAILED and "disk is full" in run.message, run


async def test_an_interrupt_starts_no_step_and_closes_the_run_interrupted(tmp_path):
    env = make_env(tmp_path)
    interrupt = Interrupt()
    pb = playbook(ENTRY_EXIT.replace("id: tidy,", "id: tidy, after: 10m,"))
    task = asyncio.ensure_future(env.run(pb, interrupt=interrupt))
    for _ in range(1000):  # until the run waits out tidy's `after: 10m`
        await asyncio.sleep(0)
        runs = env.journal.list_runs()
        done = env.journal.steps_of(runs[0].run_id) if runs else {}
        if "bid" in done and done["bid"].outcome.is_final:
            break
    interrupt.request(15)
    report = await task
    assert report.status is RunStatus.INTERRUPTED
    run = env.journal.get_run(report.run_id)
    assert (
        run.status is RunStatus.INTERRUPTED
        and "SIGTERM" in run.message
        and "not started: tidy, sq" in run.message
    )
    assert set(env.journal.steps_of(report.run_id)) == {"bid"}  # the exit steps did not start either


PAPER_PLAYBOOK = """\
version: 1
name: sigterm-demo
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1300}
  - {kind: cancel, id: tidy, all_open: {}, after: 10m}
"""


@pytest.mark.parametrize(("signum", "code"), [(15, 143), (2, 130)])
def test_sigterm_or_sigint_closes_a_cli_run_interrupted(tmp_path, signum, code):
    import os
    import sys
    import time

    from runner.journal.store import Journal

    pb = tmp_path / "demo.yaml"
    pb.write_text(PAPER_PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(pb), "--now", "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    journal = None
    for _ in range(600):  # until the first step finished and the run waits out `after: 10m`
        if proc.poll() is not None:
            break
        if (tmp_path / "j.db").exists():
            journal = journal or Journal(db)
            runs = journal.list_runs()
            done = journal.steps_of(runs[0].run_id) if runs else {}
            if "bid" in done and done["bid"].outcome.is_final:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "no new step starts" in err
    journal = Journal(db)
    (run,) = journal.list_runs()
    assert run.status is RunStatus.INTERRUPTED and "not started: tidy" in (run.message or "")
    assert set(journal.steps_of(run.run_id)) == {"bid"}
