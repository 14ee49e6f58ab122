"""The daemon's engine path: prepared and armed (journaled) before the instant, only the request at it,
the kill switch in between and in ``runner run``, and exchange sessions. Real SQLite journal, real
(paper) broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import RecordingExecutor, make_daemon, playbook_text

from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.matching import MatchingConfig
from runner.cli import main
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon, DaemonOptions, EngineExecutor, Fire, default_calendar_loader
from runner.engine.killswitch import ControlStore, GuardedBroker, Mode
from runner.ids import run_id as make_run_id
from runner.journal.db import make_engine
from runner.journal.fastpath import CALL_COLUMNS
from runner.journal.fires import Claim, FireRow, FireState, FireStore
from runner.journal.store import Journal
from runner.journal.tables import Resolution, RunStatus, StepOutcome
from runner.model import Order, OrderRequest, OrderStatus

IST = ZoneInfo("Asia/Kolkata")


def ist(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=IST).astimezone(dt.UTC)


INSTANT = ist(2026, 11, 25, 9, 15)


class ProbingPaper(PaperBroker):
    """The paper broker, noting for each request whether its intent was already in the journal."""

    journal: Journal
    seen: dict[str, bool]

    async def place(self, request: OrderRequest) -> Order:
        self.seen[request.client_order_id] = self.journal.get_intent(request.client_order_id) is not None
        return await super().place(request)


class OnePool(dict[str, object]):
    def get_broker(self, account: str) -> object:
        return self["paper"]


class HaltWhilePreparing(EngineExecutor):
    """``runner halt`` lands during the lead second, after the fire was prepared."""

    control: ControlStore
    daemon: Daemon

    async def prepare(self, fire: Fire):  # type: ignore[no-untyped-def]
        prepared = await super().prepare(fire)
        self.control.set(Mode.HALT, "ops says stop", "test", self.clock.now())
        await self.daemon.watcher.poll_once()
        return prepared


class NoteArmed(EngineExecutor):
    """Notes, right after each fire is prepared (before its release), what the journal holds for it."""

    armed: dict[str, tuple[object, ...]]

    async def prepare(self, fire: Fire):  # type: ignore[no-untyped-def]
        prepared = await super().prepare(fire)
        run = self.journal.get_run(fire.run_id)
        intents = self.journal.intents(run_id=fire.run_id)
        self.armed[fire.playbook.name] = (
            run.status if run else None,
            [(i.status, i.resolution) for i in intents],
            [call["method"] for call in self.journal.calls(run_id=fire.run_id)],
        )
        return prepared


def engine_daemon(
    tmp_path: Path,
    names: list[str],
    executor_cls: type[EngineExecutor] = EngineExecutor,
    config: MatchingConfig | None = None,
    owner: str = "d1",
    paper_cls: type[ProbingPaper] = ProbingPaper,
) -> tuple[Daemon, EngineExecutor, ProbingPaper, Journal, VirtualClock]:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir(exist_ok=True)
    for name in names:
        (pbdir / f"{name}.yaml").write_text(playbook_text(name, 'daily: "09:15"'))
    db = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    clock = VirtualClock(INSTANT - dt.timedelta(seconds=1))
    journal = Journal(engine=db)
    paper = paper_cls("paper", engine=db, clock=clock, config=config)
    paper.journal, paper.seen = journal, {}
    pool = OnePool()
    executor = executor_cls(pool, journal, clock)  # type: ignore[arg-type]
    control = ControlStore(db)
    daemon = Daemon(
        pbdir,
        fires=FireStore(db, owner),
        control=control,
        executor=executor,
        clock=clock,
        options=DaemonOptions(lead=1.0),
    )
    pool["paper"] = GuardedBroker(paper, daemon.watcher)
    if isinstance(executor, HaltWhilePreparing):
        executor.control, executor.daemon = control, daemon
    if isinstance(executor, NoteArmed):
        executor.armed = {}
    return daemon, executor, paper, journal, clock


class WarmedPaper(ProbingPaper):
    """Paper with connections to warm (as an HTTP adapter has): notes each ask and the places before it."""

    asked: list[tuple[int, int]]

    async def warm_connections(self, sends: int) -> None:
        self.asked.append((sends, len(self.seen)))


async def test_an_accounts_fires_due_together_warm_a_connection_each(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    daemon, _, paper, _, _ = engine_daemon(tmp_path, names, paper_cls=WarmedPaper)
    assert isinstance(paper, WarmedPaper)
    paper.asked = []
    await daemon.prepare()
    await asyncio.gather(*(daemon.fire(daemon.entries[n], INSTANT) for n in names))

    assert len(paper.seen) == 3
    # each fire, once prepared, asks for one more connection: one per send of the instant
    assert [n for n, _ in paper.asked] == [1, 2, 3], paper.asked


class UnevenPaper(ProbingPaper):
    """Paper whose first request goes out at once and is answered at once, while the others take a few
    turns of the event loop to leave (as requests behind a slower connection would). Notes when each
    request leaves and each journal write of an ack or step."""

    events: list[str]

    async def place(self, request: OrderRequest) -> Order:
        if self.events:  # not the first: leaves later
            for _ in range(20):
                await asyncio.sleep(0)
        self.events.append(f"sent {request.client_order_id}")
        return await super().place(request)


async def test_no_run_journals_its_ack_before_every_request_of_the_instant_left(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    daemon, _, paper, journal, _ = engine_daemon(tmp_path, names, paper_cls=UnevenPaper)
    assert isinstance(paper, UnevenPaper)
    paper.events = []
    for method in ("record_order", "finish_step", "finish_run"):
        real = getattr(journal, method)

        def noting(*args: object, _real=real, _name=method, **kw: object) -> object:  # type: ignore[no-untyped-def]
            paper.events.append(_name)
            return _real(*args, **kw)

        setattr(journal, method, noting)
    await daemon.prepare()
    await asyncio.gather(*(daemon.fire(daemon.entries[n], INSTANT) for n in names))

    sent = [i for i, e in enumerate(paper.events) if e.startswith("sent ")]
    writes = [i for i, e in enumerate(paper.events) if not e.startswith("sent ")]
    assert len(sent) == 3 and writes, paper.events
    assert max(sent) < min(writes), paper.events  # the burst first, then the bookkeeping
    for name in names:
        row = daemon.store.slot(name, INSTANT)
        assert row is not None and row.state is FireState.SUCCEEDED, row


async def test_the_bursts_bookkeeping_is_group_committed_off_the_event_loop(tmp_path: Path) -> None:
    """After the requests left, the acks, step ends and run ends of the runs fired together are written
    in shared transactions in a worker thread, not one synchronous commit each on the event loop."""
    import threading

    from runner.journal.bookkeeping import bookkeeping_for

    names = ["a", "b", "c"]
    daemon, _, paper, journal, _ = engine_daemon(tmp_path, names)
    loop_thread = threading.get_ident()
    writes: list[tuple[str, bool]] = []
    for method in ("record_order", "finish_step", "finish_run"):
        real = getattr(journal, method)

        def noting(*args: object, _real=real, _name=method, **kw: object) -> object:  # type: ignore[no-untyped-def]
            writes.append((_name, threading.get_ident() == loop_thread))
            return _real(*args, **kw)

        setattr(journal, method, noting)
    await daemon.prepare()
    await asyncio.gather(*(daemon.fire(daemon.entries[n], INSTANT) for n in names))

    names_written = [w for w, _ in writes]
    assert names_written.count("finish_step") == names_written.count("finish_run") == 3, writes
    assert names_written.count("record_order") >= 3, writes  # the acks (and what paper reported since)
    assert not any(on_loop for _, on_loop in writes), writes
    batches = bookkeeping_for(journal.engine).batches
    assert sum(batches) == 6 and len(batches) < 6, batches  # two flushes a run, shared between runs
    assert len(paper.seen) == 3 and all(paper.seen.values())
    for name in names:
        row = daemon.store.slot(name, INSTANT)
        assert row is not None and row.state is FireState.SUCCEEDED, row
        run = journal.get_run(row.run_id)
        assert run is not None and run.status is RunStatus.SUCCEEDED
        assert journal.steps_of(row.run_id)["buy"].outcome is StepOutcome.SUCCEEDED
        [intent] = journal.intents(run_id=row.run_id)
        assert intent.broker_order_id is not None  # the ack, written by the group commit
        assert [c["method"] for c in journal.calls(run_id=row.run_id)].count("place") == 1


class PrimedPaper(ProbingPaper):
    """Paper with primed requests (runner.brokers.primed), as the Kotak adapter has: notes when each
    primed request is written and when each run's path reaches ``place``."""

    events: list[str]
    primed: dict[str, OrderRequest]

    async def prime(self, request: OrderRequest) -> None:
        self.primed[request.client_order_id] = request

    def unprime(self, client_order_id: str) -> None:
        self.primed.pop(client_order_id, None)

    def write_primed(self, request: OrderRequest) -> bool:
        if self.primed.pop(request.client_order_id, None) != request:
            return False
        self.events.append(f"written {request.client_order_id}")
        return True

    async def place(self, request: OrderRequest) -> Order:
        self.events.append(f"place {request.client_order_id}")
        return await super().place(request)


def primed_daemon(tmp_path: Path, names: list[str]) -> tuple[Daemon, PrimedPaper, Journal]:
    daemon, _, paper, journal, _ = engine_daemon(tmp_path, names, paper_cls=PrimedPaper)
    assert isinstance(paper, PrimedPaper)
    paper.events, paper.primed = [], {}
    return daemon, paper, journal


async def test_every_armed_request_of_the_instant_is_written_before_any_run_takes_its_path(
    tmp_path: Path,
) -> None:
    names = ["a", "b", "c"]
    daemon, paper, journal = primed_daemon(tmp_path, names)
    await daemon.prepare()
    await asyncio.gather(*(daemon.fire(daemon.entries[n], INSTANT) for n in names))

    written = [i for i, e in enumerate(paper.events) if e.startswith("written ")]
    places = [i for i, e in enumerate(paper.events) if e.startswith("place ")]
    assert len(written) == len(places) == 3 and max(written) < min(places), paper.events
    assert len(paper.seen) == 3 and all(paper.seen.values())  # each intent committed before
    for name in names:
        row = daemon.store.slot(name, INSTANT)
        assert row is not None and row.state is FireState.SUCCEEDED, row
        [intent] = journal.intents(run_id=row.run_id)
        assert intent.broker_order_id is not None


async def test_a_slow_prime_holds_up_neither_arming_nor_the_instant(tmp_path: Path) -> None:
    """Priming opens a connection; 1,000 of them awaited while arming made preparation outlast the
    lead (every fire released late, bench/lateness.py). A prime not done by the instant: the order
    goes the ordinary way, on time."""
    daemon, paper, journal = primed_daemon(tmp_path, ["a"])
    never = asyncio.Event()

    async def stuck(request: OrderRequest) -> None:
        await never.wait()

    paper.prime = stuck  # type: ignore[method-assign]
    await daemon.prepare()
    await asyncio.wait_for(daemon.fire(daemon.entries["a"], INSTANT), 5)
    row = daemon.store.slot("a", INSTANT)
    assert row is not None and row.state is FireState.SUCCEEDED, row
    run = journal.get_run(row.run_id)
    assert run is not None and run.started_at == INSTANT  # armed, not re-created late
    assert [e for e in paper.events if e.startswith("written")] == [] and len(paper.seen) == 1


async def test_a_halt_after_an_armed_request_was_written_does_not_make_it_a_refused_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill switch let the request go when it was written; a halt landing before its run reaches
    ``place`` must not journal it as refused (ABSENT): it is at the broker."""
    from runner.engine.killswitch import Halted

    daemon, paper, journal = primed_daemon(tmp_path, ["a"])
    halted: list[bool] = []
    write = paper.write_primed

    def write_then_halt(request: OrderRequest) -> bool:
        done = write(request)
        halted.append(True)  # a halt lands right after
        return done

    async def check(self: GuardedBroker, request: OrderRequest) -> None:
        if halted:
            raise Halted("halted (ops): no new orders", Mode.HALT)

    paper.write_primed = write_then_halt  # type: ignore[method-assign]
    monkeypatch.setattr(GuardedBroker, "check", check)
    await daemon.prepare()
    await daemon.fire(daemon.entries["a"], INSTANT)

    row = daemon.store.slot("a", INSTANT)
    assert row is not None and row.state is FireState.SUCCEEDED, row
    [intent] = journal.intents(run_id=row.run_id)
    assert intent.broker_order_id is not None and intent.resolution is not Resolution.ABSENT
    assert [o.client_order_id for o in await paper.orders()] == [intent.client_order_id]


async def test_fires_due_together_are_armed_in_the_journal_before_the_instant(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    daemon, executor, paper, journal, _ = engine_daemon(tmp_path, names, NoteArmed)
    await daemon.prepare()
    await asyncio.gather(*(daemon.fire(daemon.entries[n], INSTANT) for n in names))

    assert isinstance(executor, NoteArmed)
    for name in names:  # once prepared: run, step and intent committed, nothing sent
        status, intents, methods = executor.armed[name]
        assert status is RunStatus.RUNNING and "place" not in methods, executor.armed[name]
        assert intents == [(OrderStatus.PENDING_NEW, Resolution.PENDING)]
    # the lead run connects first; the two waiting on its connect are armed together
    assert sum(executor.commit.batches) == 3 and len(executor.commit.batches) < 3
    assert len(paper.seen) == 3 and all(paper.seen.values())  # every intent committed before its request
    connects = 0
    for name in names:
        row = daemon.store.slot(name, INSTANT)
        assert row is not None and row.state is FireState.SUCCEEDED, row
        run = journal.get_run(row.run_id)
        assert run is not None and run.status is RunStatus.SUCCEEDED and run.started_at == INSTANT
        [intent] = journal.intents(run_id=row.run_id)
        assert intent.created_at == INSTANT and intent.step_id == "buy"
        assert intent.sent_at == INSTANT  # stamped by the armed commit: no write at the instant
        assert journal.steps_of(row.run_id)["buy"].outcome is StepOutcome.SUCCEEDED
        calls = journal.calls(run_id=row.run_id)
        connects += sum(c["method"] == "connect" for c in calls)
        # connected while preparing, a second ahead; the order at the instant
        assert all(c["at"] < INSTANT for c in calls if c["method"] == "connect")
        [placed] = [c["at"] for c in calls if c["method"] == "place"]  # journaled when the ack came
        assert placed >= INSTANT
    assert connects == 1  # the fires of one account and instant share the connect


async def halted_fire(
    tmp_path: Path, executor_cls: type[HaltWhilePreparing]
) -> tuple[FireRow, ProbingPaper, Journal]:
    """Fire "a", ``runner halt`` landing between its preparation and its instant: SKIPPED, nothing sent."""
    daemon, _, paper, journal, _ = engine_daemon(tmp_path, ["a"], executor_cls)
    await daemon.prepare()
    await daemon.fire(daemon.entries["a"], INSTANT)
    row = daemon.store.slot("a", INSTANT)
    assert row is not None and row.state is FireState.SKIPPED and row.outcome == "halted"
    assert paper.seen == {} and await paper.orders() == []
    return row, paper, journal


async def test_halt_between_prepare_and_instant_sends_and_journals_nothing(tmp_path: Path) -> None:
    row, _, journal = await halted_fire(tmp_path, HaltWhilePreparing)
    assert journal.get_run(row.run_id) is None and journal.intents(run_id=row.run_id) == []


async def test_released_late_is_disarmed_and_takes_the_ordinary_path(tmp_path: Path) -> None:
    daemon, executor, paper, journal, clock = engine_daemon(tmp_path, ["a"])
    await daemon.prepare()
    entry = daemon.entries["a"]
    fire = Fire(entry.playbook, entry.path, entry.version, INSTANT, "r-late", "f-late")
    prepared = await executor.prepare(fire)
    run_id = prepared.engine.run_id
    armed_at = journal.get_run(run_id)
    assert armed_at is not None and armed_at.started_at == INSTANT and executor.commit.batches == [1]
    late = clock._now = INSTANT + dt.timedelta(seconds=5)  # e.g. the loop stalled: late rules apply
    result = await prepared.run()
    assert result.state is FireState.SUCCEEDED
    run = journal.get_run(run_id)
    # re-created by the ordinary path at the late time, as one fresh start; one order, sent once
    assert run is not None and run.started_at == late and run.starts == 1
    [intent] = journal.intents(run_id=run_id)
    assert intent.created_at >= late and list(paper.seen.values()) == [True]


async def test_a_fire_prepared_after_its_instant_is_armed_as_of_then_and_sent_armed(tmp_path: Path) -> None:
    """A fire prepared 1.5 s after its instant (taken over from a dead daemon; the daemon judged its
    ``late:`` policy when it took it): armed as of its preparation, so its release right after is not
    "released late" - no disarm, no re-created run, no synchronous writes per fire at the instant (all
    of a dead daemon's fires were disarmed that way and the takeover took 5.6 s at 1,000 fires)."""
    daemon, executor, paper, journal, clock = engine_daemon(tmp_path, ["a"])
    await daemon.prepare()
    entry = daemon.entries["a"]
    prepared_at = clock._now = INSTANT + dt.timedelta(seconds=1.5)
    fire = Fire(entry.playbook, entry.path, entry.version, INSTANT, "r-taken", "f-taken")
    prepared = await executor.prepare(fire)
    run_id = prepared.engine.run_id
    clock._now = prepared_at + dt.timedelta(seconds=0.2)
    result = await prepared.run()
    assert result.state is FireState.SUCCEEDED
    run = journal.get_run(run_id)
    assert run is not None and run.scheduled_for == INSTANT and run.starts == 1
    assert run.started_at == prepared_at  # the armed row, kept, stamped when it was written
    [intent] = journal.intents(run_id=run_id)
    assert intent.created_at == prepared_at and list(paper.seen.values()) == [True]


async def test_a_fire_released_on_time_but_reached_late_in_its_burst_stays_armed(tmp_path: Path) -> None:
    """The gate released the burst at the instant; this fire's turn came 5 s later because the burst's
    other fires ran first. That lateness is the burst's own: the armed request goes out as armed (no
    disarm, no re-created run, no extra journal writes at the instant)."""
    from runner.brokers.burst import Burst, joined

    daemon, executor, paper, journal, clock = engine_daemon(tmp_path, ["a"])
    await daemon.prepare()
    entry = daemon.entries["a"]
    fire = Fire(entry.playbook, entry.path, entry.version, INSTANT, "r-burst", "f-burst")
    prepared = await executor.prepare(fire)
    run_id = prepared.engine.run_id
    burst = Burst()
    member = burst.member()
    burst.released(INSTANT)  # the gate opened on time
    clock._now = INSTANT + dt.timedelta(seconds=5)  # ... and the fires ahead of this one took 5 s
    with joined(member):
        result = await prepared.run()
    assert result.state is FireState.SUCCEEDED
    run = journal.get_run(run_id)
    assert run is not None and run.started_at == INSTANT and run.starts == 1  # the armed row, kept
    [intent] = journal.intents(run_id=run_id)
    assert intent.created_at == INSTANT and list(paper.seen.values()) == [True]


async def test_an_armed_run_left_by_a_crash_is_resolved_by_lookup_not_resent(tmp_path: Path) -> None:
    # like the real brokers: a repeated client id is accepted, so a lookup miss proves nothing at once
    config = MatchingConfig(idempotent_client_ids=False)
    daemon, executor, paper, journal, clock = engine_daemon(tmp_path, ["a"], config=config)
    await daemon.prepare()
    entry = daemon.entries["a"]
    fire = Fire(entry.playbook, entry.path, entry.version, INSTANT, "r-crash", "f-crash")
    crashed = await executor.prepare(fire)  # armed, then the process dies: no run(), no abandon()
    [armed] = journal.intents(run_id=crashed.engine.run_id)
    clock._now = INSTANT + dt.timedelta(seconds=2)
    # a fresh executor (the restarted daemon) runs the same fire: it must not trust "never sent"
    restarted = EngineExecutor(executor.pool, journal, clock)
    result = await (await restarted.prepare(fire)).run()
    assert result.state is FireState.FAILED
    step = journal.steps_of(crashed.engine.run_id)["buy"]
    assert step.outcome is StepOutcome.FAILED and "unknown" in (step.message or "").lower(), step
    assert paper.seen == {} and await paper.orders() == []  # looked up, not sent
    clock._now = INSTANT + dt.timedelta(seconds=70)  # past absent_after: the next start's lookup miss
    again = EngineExecutor(executor.pool, journal, clock)  # is proof it never arrived
    await again.prepare(fire)
    intent = journal.get_intent(armed.client_order_id)
    assert intent is not None and intent.resolution is Resolution.ABSENT
    assert paper.seen == {} and await paper.orders() == []


async def test_restart_closes_a_run_that_crashed_armed_and_the_accounts_next_run_looks_it_up(
    tmp_path: Path,
) -> None:
    d1, ex1, _, journal, clock = engine_daemon(tmp_path, ["a", "b"])
    await d1.prepare()
    entry = d1.entries["a"]
    claim = Claim("a", entry.version, INSTANT, make_run_id("a", INSTANT))
    assert await d1.batcher.claim(claim, clock.now())
    fire = Fire(entry.playbook, entry.path, entry.version, INSTANT, claim.run_id, claim.fire_id)
    await ex1.prepare(fire)  # armed; then the process dies (no run, no abandon)
    [armed] = journal.intents(run_id=claim.run_id)

    d2, ex2, paper, _, clock2 = engine_daemon(tmp_path, ["a", "b"], owner="d2")
    clock2._now = INSTANT + dt.timedelta(minutes=1)
    await d2.prepare()
    assert [i.playbook for i in d2.catch_up_report if i.action == "interrupted"] == ["a"]
    run = journal.get_run(claim.run_id)
    assert run is not None and run.status is RunStatus.INTERRUPTED and "interrupted" in (run.message or "")

    # the account's next run reconciles it before sending anything: looked up, never re-sent
    nxt = INSTANT + dt.timedelta(days=1)
    clock2._now = nxt - dt.timedelta(seconds=1)
    entry_b = d2.entries["b"]
    fire_b = Fire(entry_b.playbook, entry_b.path, entry_b.version, nxt, make_run_id("b", nxt), "f-b")
    await ex2.prepare(fire_b)
    intent = journal.get_intent(armed.client_order_id)
    assert intent is not None and intent.resolution is Resolution.ABSENT  # paper refuses repeated ids
    assert paper.seen == {} and await paper.orders() == []


class CancelledAroundTheCommit(EngineExecutor):
    """SIGTERM lands while a fire's armed rows wait for their group commit: ``after_write`` False, before
    the commit's tick (nothing may be written); True, once it was written (the rows must be taken back)."""

    after_write: bool

    async def prepare(self, fire: Fire):  # type: ignore[no-untyped-def]
        real = self.commit.commit

        async def commit(staged, now):  # type: ignore[no-untyped-def]
            if self.after_write:
                await real(staged, now)
            else:
                task = asyncio.ensure_future(real(staged, now))
                await asyncio.sleep(0)  # queued, not flushed yet
                task.cancel()
            raise asyncio.CancelledError

        self.commit.commit = commit  # type: ignore[method-assign]
        try:
            return await super().prepare(fire)
        finally:
            del self.commit.commit


@pytest.mark.parametrize("after_write", [False, True])
async def test_shutdown_while_arming_leaves_nothing_armed_behind(tmp_path: Path, after_write: bool) -> None:
    daemon, executor, paper, journal, _ = engine_daemon(tmp_path, ["a"], CancelledAroundTheCommit)
    assert isinstance(executor, CancelledAroundTheCommit)
    executor.after_write = after_write
    await daemon.prepare()
    await asyncio.gather(daemon.fire(daemon.entries["a"], INSTANT), return_exceptions=True)
    await asyncio.sleep(0)  # a cancelled entry's flush tick
    assert daemon.store.slot("a", INSTANT) is None  # the claim was given back: a restart may fire it
    assert journal.list_runs() == [] and paper.seen == {}  # and it would start fresh
    assert executor.commit.batches == ([1] if after_write else [])


class DiscardRefused(HaltWhilePreparing):
    """The armed intent is touched after arming (here: a lookup by another run journaled for it), then
    ``runner halt`` lands before the instant: the journal refuses to discard it."""

    async def prepare(self, fire: Fire):  # type: ignore[no-untyped-def]
        prepared = await super().prepare(fire)
        [intent] = self.journal.intents(run_id=fire.run_id)
        call = {"run_id": "other", "client_order_id": intent.client_order_id, "method": "get_order"}
        self.journal.record_call(dict.fromkeys(CALL_COLUMNS) | call | {"at": self.clock.now()})
        return prepared


async def test_a_refused_discard_closes_the_run_and_the_fire_still_gets_its_state(tmp_path: Path) -> None:
    row, _, journal = await halted_fire(tmp_path, DiscardRefused)
    run = journal.get_run(row.run_id)  # not left RUNNING: the account's next run looks the order up
    assert run is not None and run.status is RunStatus.FAILED and "not sent" in (run.message or "")


PLAYBOOK = """\
version: 1
name: cli-halt
timezone: Asia/Kolkata
steps:
  - {kind: place, id: buy, instrument: {exchange: NSE, symbol: RELIANCE}, side: BUY, quantity: 1}
"""


def test_runner_run_honours_the_kill_switch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    pb = tmp_path / "halt.yaml"
    pb.write_text(PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    assert main(["halt", "--db", db, "--reason", "drill"]) == 0
    capsys.readouterr()
    assert main(["run", str(pb), "--now", "--db", db, "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "refused"
    [step] = report["steps"]
    assert step["outcome"] == "refused" and "kill switch" in step["message"] and "drill" in step["message"]
    assert main(["resume", "--db", db]) == 0
    capsys.readouterr()
    pb.write_text(PLAYBOOK.replace("cli-halt", "cli-after"))  # a fresh run: --now slots are per second
    assert main(["run", str(pb), "--now", "--db", db, "--json"]) == 0


@pytest.mark.parametrize(
    ("when", "state"),
    [
        (ist(2026, 11, 8, 9, 15), FireState.SKIPPED),  # Sunday: only the evening Muhurat session
        (ist(2026, 11, 8, 18, 15), FireState.SUCCEEDED),  # inside the Muhurat session
        (ist(2026, 11, 9, 9, 0), FireState.SUCCEEDED),  # Monday pre-open
        (ist(2026, 11, 9, 8, 55), FireState.SKIPPED),  # before the pre-open
        (ist(2026, 11, 9, 15, 30), FireState.SUCCEEDED),  # the close itself
        (ist(2026, 11, 9, 16, 0), FireState.SKIPPED),  # after the close
    ],
)
async def test_fire_outside_the_days_sessions_is_skipped(
    tmp_path: Path, when: dt.datetime, state: FireState
) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    local = when.astimezone(IST)
    (pbdir / "s.yaml").write_text(playbook_text("s", f'daily: "{local:%H:%M}"', calendar="NSE"))
    clock = VirtualClock(when)
    ex = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, ex, "d1")
    daemon.calendars = default_calendar_loader()
    await daemon.prepare()
    await daemon.fire(daemon.entries["s"], when)
    row = daemon.store.slot("s", when)
    assert row is not None and row.state is state, row
    if state is FireState.SKIPPED:
        assert "outside it" in (row.outcome or "") and not ex.calls
