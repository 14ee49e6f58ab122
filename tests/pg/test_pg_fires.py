"""Two scheduler daemons on ONE PostgreSQL journal: every slot fires exactly once (in-process daemons on
separate engines, and two real processes released at the same instant), the loser sees the winner's
claim, and the kill switch written by one side is honoured by both. The scheduler's SQLite tests for
these behaviours re-run unedited on PostgreSQL as well."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import test_sched_control as control_tests
import test_sched_daemon as daemon_tests
import test_sched_engine as engine_tests
from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.cli import main
from runner.clock import VirtualClock
from runner.engine.killswitch import ControlStore, Mode
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore, fires
from runner.journal.store import Journal
from runner.journal.tables import RunStatus, order_intents, runs

IST = ZoneInfo("Asia/Kolkata")
REPO = Path(__file__).resolve().parents[2]
CAL = DayCalendar({2026}, set())


def ist(d: int, h: int = 9, mi: int = 15) -> dt.datetime:
    return dt.datetime(2026, 11, d, h, mi, tzinfo=IST).astimezone(dt.UTC)


@pytest.fixture
def db_url(pg_db_url: str) -> str:  # what the borrowed test_sched_daemon tests open
    return pg_db_url


@pytest.fixture
def engine(pg_db_url: str) -> sa.Engine:  # what the borrowed test_sched_control tests open
    return make_engine(pg_db_url)


@pytest.fixture(autouse=True)
def _engine_tests_on_postgresql(request: pytest.FixtureRequest) -> None:
    if request.function.__module__ == engine_tests.__name__:
        request.getfixturevalue("pg_reroute")(engine_tests)


pbdir = daemon_tests.pbdir

# --- the SQLite scheduler suite's cross-daemon behaviours, unedited, on PostgreSQL -----------------------

test_two_daemons_one_journal_fire_exactly_once = daemon_tests.test_two_daemons_one_journal_fire_exactly_once
test_a_new_version_cannot_refire_the_same_slot = daemon_tests.test_a_new_version_cannot_refire_the_same_slot
test_restart_marks_interrupted_fires_unknown = daemon_tests.test_restart_marks_interrupted_fires_unknown
test_a_claim_a_dead_daemon_never_acted_on_is_planned_again_at_start = (
    daemon_tests.test_a_claim_a_dead_daemon_never_acted_on_is_planned_again_at_start
)
test_the_sweep_journals_a_claim_a_dead_daemon_never_acted_on_as_missed = (
    daemon_tests.test_the_sweep_journals_a_claim_a_dead_daemon_never_acted_on_as_missed
)
test_marking_a_fire_interrupted_never_overwrites_one_that_finished = (
    daemon_tests.test_marking_a_fire_interrupted_never_overwrites_one_that_finished
)
test_shutdown_while_arming_leaves_nothing_armed_behind = (
    engine_tests.test_shutdown_while_arming_leaves_nothing_armed_behind
)
test_a_refused_discard_closes_the_run_and_the_fire_still_gets_its_state = (
    engine_tests.test_a_refused_discard_closes_the_run_and_the_fire_still_gets_its_state
)
test_a_daemon_that_died_during_a_quick_restart_is_swept_once_its_heartbeat_is_stale = (
    daemon_tests.test_a_daemon_that_died_during_a_quick_restart_is_swept_once_its_heartbeat_is_stale
)
test_restart_catch_up_report_skip_and_run_within = (
    daemon_tests.test_restart_catch_up_report_skip_and_run_within
)
test_halt_skips_fires_and_is_seen_within_a_poll = daemon_tests.test_halt_skips_fires_and_is_seen_within_a_poll
test_shutdown_waits_for_running_fire_or_journals_unknown = (
    daemon_tests.test_shutdown_waits_for_running_fire_or_journals_unknown
)
test_control_row_round_trip = control_tests.test_control_row_round_trip
test_guarded_paper_broker_honours_halt_and_reduce_only = (
    control_tests.test_guarded_paper_broker_honours_halt_and_reduce_only
)
test_daemon_halt_cancels_open_orders_within_a_poll = (
    control_tests.test_daemon_halt_cancels_open_orders_within_a_poll
)
test_fires_due_together_are_armed_in_the_journal_before_the_instant = (
    engine_tests.test_fires_due_together_are_armed_in_the_journal_before_the_instant
)
test_halt_between_prepare_and_instant_sends_and_journals_nothing = (
    engine_tests.test_halt_between_prepare_and_instant_sends_and_journals_nothing
)
test_released_late_is_disarmed_and_takes_the_ordinary_path = (
    engine_tests.test_released_late_is_disarmed_and_takes_the_ordinary_path
)
test_an_armed_run_left_by_a_crash_is_resolved_by_lookup_not_resent = (
    engine_tests.test_an_armed_run_left_by_a_crash_is_resolved_by_lookup_not_resent
)
test_restart_closes_a_run_that_crashed_armed_and_the_accounts_next_run_looks_it_up = (
    engine_tests.test_restart_closes_a_run_that_crashed_armed_and_the_accounts_next_run_looks_it_up
)

# --- two daemon processes racing for the same instants ---------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, datetime as dt, json, sys
    from runner.accounts import PAPER
    from runner.clock import VirtualClock
    from runner.engine.killswitch import ControlStore
    from runner.journal.db import make_engine
    from runner.journal.fires import FireStore
    from runner.journal.store import Journal
    from runner.daemon.scheduler import BrokerPool, Daemon, DaemonOptions, EngineExecutor

    url, pbdir, owner, order, instants = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]

    async def main():
        dues = [dt.datetime.fromisoformat(t) for t in instants]
        clock = VirtualClock(dues[0] - dt.timedelta(seconds=1))
        engine = make_engine(url)
        pool = BrokerPool({"paper": PAPER}, None, clock=clock, engine=engine)
        daemon = Daemon(
            pbdir, fires=FireStore(engine, owner), control=ControlStore(engine),
            executor=EngineExecutor(pool, Journal(engine=engine), clock), clock=clock,
            calendars=lambda _exchange: None, options=DaemonOptions(lead=1.0),
        )
        pool.view = daemon.watcher
        await daemon.prepare()
        names = sorted(daemon.entries, reverse=order == "reverse")
        seen = []
        for due in dues:
            clock._now = max(clock.now(), due - dt.timedelta(seconds=1))
            print("ready", flush=True)
            sys.stdin.readline()  # the parent releases both daemons together
            await asyncio.gather(*(daemon.fire(daemon.entries[n], due) for n in names))
            for n in names:
                row = daemon.store.slot(n, due)
                seen.append([n, due.isoformat(), row.claimed_by if row else None])
        print(json.dumps(seen), flush=True)

    asyncio.run(main())
    """
)


def spawn(url: str, pbdir: Path, owner: str, order: str, dues: list[dt.datetime]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(pbdir), owner, order, *(d.isoformat() for d in dues)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def prepare_schema(url: str) -> None:
    """Create every table once, as an installer would: the race under test is the claim, not DDL."""
    from runner.brokers.paper.broker import PaperStore

    engine = make_engine(url)
    Journal(engine=engine)
    FireStore(engine, "setup")
    ControlStore(engine)
    PaperStore(engine, "paper").ensure_schema()
    engine.dispose()


@pytest.mark.parametrize("orders", [("forward", "forward"), ("forward", "reverse")])
def test_two_daemon_processes_fire_each_slot_exactly_once(
    pg_db_url: str, tmp_path: Path, orders: tuple[str, str]
) -> None:
    names = ["a", "b", "c", "d"]
    dues = [ist(25), ist(26), ist(27)]  # Wed..Fri 09:15 IST
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    for name in names:
        (pbdir / f"{name}.yaml").write_text(playbook_text(name, 'daily: "09:15"'))
    prepare_schema(pg_db_url)
    kids = [
        spawn(pg_db_url, pbdir, owner, order, dues) for owner, order in zip(("d1", "d2"), orders, strict=True)
    ]
    try:
        for _ in dues:
            for kid in kids:  # both ready for this instant...
                assert kid.stdout is not None and kid.stdout.readline().strip() == "ready"
            for kid in kids:  # ...then released as close together as two pipes allow
                assert kid.stdin is not None
                kid.stdin.write("go\n")
                kid.stdin.flush()
        outs = [kid.communicate(timeout=120) for kid in kids]
    finally:
        for kid in kids:
            if kid.poll() is None:
                kid.kill()
                kid.communicate()
    for kid, (_out, err) in zip(kids, outs, strict=True):
        assert kid.returncode == 0, err
    seen = [sorted(json.loads(out)) for out, _err in outs]
    # each daemon reads back one claim per slot, the same one the other daemon reads
    assert seen[0] == seen[1] and len(seen[0]) == len(names) * len(dues)
    assert all(owner in ("d1", "d2") for _n, _t, owner in seen[0])

    engine = make_engine(pg_db_url)
    try:
        with engine.connect() as c:
            fire_rows = c.execute(sa.select(fires.c.playbook, fires.c.state, fires.c.run_id)).all()
            run_rows = c.execute(sa.select(runs.c.run_id, runs.c.status, runs.c.starts)).all()
            intents = c.execute(sa.select(order_intents.c.run_id)).scalars().all()
    finally:
        engine.dispose()
    assert len(fire_rows) == len(names) * len(dues)
    assert {r.state for r in fire_rows} == {FireState.SUCCEEDED}, fire_rows
    assert sorted(r.run_id for r in run_rows) == sorted(r.run_id for r in fire_rows)  # one run per fire
    assert all(r.status == RunStatus.SUCCEEDED.value and r.starts == 1 for r in run_rows), run_rows
    assert sorted(intents) == sorted(r.run_id for r in run_rows)  # one order per run, none twice


# --- the kill switch shared across daemons --------------------------------------------------------------


async def test_halt_written_by_ops_is_honoured_by_both_daemons(pg_db_url: str, tmp_path: Path) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "a.yaml").write_text(playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    due = ist(25)
    daemons, executors = [], []
    for owner in ("d1", "d2"):  # separate engines: separate connections, as separate hosts would have
        clock = VirtualClock(due)
        ex = RecordingExecutor(clock)
        daemon = make_daemon(pbdir, pg_db_url, clock, ex, owner, CAL)
        await daemon.prepare()
        daemons.append(daemon)
        executors.append(ex)

    # `runner halt` from an ops shell, against the plain postgresql:// URL (psycopg implied)
    plain = pg_db_url.replace("postgresql+psycopg://", "postgresql://")
    assert main(["halt", "--db", plain, "--reason", "desk says stop"]) == 0
    for d in daemons:
        await d.watcher.poll_once()
        assert d.watcher.state.mode is Mode.HALT and d.watcher.state.reason == "desk says stop"
    await asyncio.gather(*(d.fire(d.entries["nifty_open"], due) for d in daemons))
    assert executors[0].calls == executors[1].calls == []
    [row] = daemons[0].store.history("nifty_open")
    assert row.state is FireState.SKIPPED and "desk says stop" in (row.outcome or "")
    assert daemons[1].store.slot("nifty_open", due) == row  # the other daemon sees the same claim

    # resumed through one daemon's own connection; the other daemon sees it on its next poll
    ControlStore(daemons[1].store.engine).set(Mode.NORMAL, None, "d2-ops", due)
    for d in daemons:
        await d.watcher.poll_once()
        assert d.watcher.state.mode is Mode.NORMAL and d.watcher.state.by == "d2-ops"
    nxt = ist(26)
    for d in daemons:
        d.clock._now = nxt  # type: ignore[attr-defined]
    await asyncio.gather(*(d.fire(d.entries["nifty_open"], nxt) for d in daemons))
    assert len(executors[0].calls) + len(executors[1].calls) == 1
    ran = daemons[0].store.slot("nifty_open", nxt)
    assert ran is not None and ran.state is FireState.SUCCEEDED


def test_concurrent_halt_writers_leave_one_control_row(pg_db_url: str) -> None:
    """Two hosts hitting ``runner halt`` at once on a fresh journal (UPDATE finds nothing, both INSERT)."""
    import threading

    from runner.engine.killswitch import control

    stores = [ControlStore(make_engine(pg_db_url)) for _ in range(2)]
    errors: list[BaseException] = []
    for _ in range(10):
        with stores[0].engine.begin() as c:
            c.execute(control.delete())  # fresh journal: no control row yet
        barrier = threading.Barrier(2)

        def halt(i: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                stores[i].set(Mode.HALT, f"host {i}", f"ops{i}", ist(25))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=halt, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert stores[0].get().mode is Mode.HALT
    assert errors == [], errors[:1]  # a kill switch must not fail because another operator pressed it too
