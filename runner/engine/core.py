"""Run a validated playbook against a broker: timing, step dispatch, journaling, resume.

``execute`` is the one entry point (used by ``runner run``, ``rehearse``, ``apply`` and the scheduler):

1. open (or resume) the run in the journal; the run id is deterministic (:func:`runner.ids.run_id`);
2. connect, then reconcile by client id, before anything is sent, every unsettled intent of this run and of
   the account's runs that are not running (recent ones: see ``Tuning.reconcile_horizon``);
3. for each step not already finished: honour ``at`` / ``after`` / ``late`` on the injected clock, then
   dispatch on ``kind`` (:data:`runner.engine.steps.dispatch.HANDLERS`). After a failed / refused / stopping
   step, only risk-reducing steps (cancel, square_off) still run.

A step's outcome says what is true at the broker; handler modules read orders and positions back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast
from zoneinfo import ZoneInfo

from runner.alerts.observe import alert_observer, publish_dead_run_closed
from runner.brokers.base import Broker
from runner.brokers.burst import released_at
from runner.brokers.primed import adapter_of, unprime, write_primed
from runner.clock import Clock
from runner.engine.account_lease import drop_lease, lease_ahead, take_lease
from runner.engine.arming import (
    LATE_GRACE,
    _HaltNotes,
    _HeldLog,
    _Precommitted,
    _SentEarly,
    _Staged,
    _YieldAfterPlace,
    stage_first,
)
from runner.engine.calls import Tuning
from runner.engine.events import EngineEvent, EventKind, Observer
from runner.engine.gateway import Gateway
from runner.engine.group import run_group
from runner.engine.interrupt import Interrupt
from runner.engine.killswitch import GuardedBroker
from runner.engine.leases import DEFAULT_BUSY_WAIT, Lease, leases_for
from runner.engine.risk import RiskChecker, RiskConfig, RiskRefused
from runner.engine.rolling import resolve_for_step
from runner.engine.steps.common import RunContext, StepError, StepRefused, StepResult
from runner.engine.steps.dispatch import EXIT_KINDS, HANDLERS
from runner.errors import BrokerError
from runner.ids import run_id as make_run_id
from runner.ids import run_id_in
from runner.instruments.load import resolved_sha
from runner.journal.bookkeeping import DeferredJournal
from runner.journal.errors import DuplicateIntent, JournalError
from runner.journal.offloop import off_loop
from runner.journal.records import RunRecord, StepRecord
from runner.journal.store import Journal
from runner.journal.tables import RunStatus, StepOutcome
from runner.liveness import ProcessIdentity
from runner.logs import get_logger
from runner.plan.groups import GroupLabel, label_of
from runner.playbook.models import Playbook, parse_duration

if TYPE_CHECKING:
    from runner.journal.groupcommit import GroupCommit
    from runner.model import OrderRequest

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    scheduled_for: dt.datetime  # the slot this run belongs to; with the playbook name it fixes the run id
    mode: str = "run"  # run | rehearse | apply | scheduled (journal label only)
    ignore_at: bool = False  # ``--now``: do not wait for ``at`` times (``after`` still applies)
    risk: RiskConfig | None = None
    tuning: Tuning = field(default_factory=Tuning)
    run_key: str | None = None  # names the run id instead of the playbook (rehearsals use their own ids)
    connect: bool = True  # False: the caller already connected this broker (fires sharing an instant)
    reconcile: bool = True  # False: the caller already reconciled this account's unsettled intents
    owner: str | None = None  # the run's owner token (runner.liveness); default: this process
    interrupt: Interrupt | None = None  # SIGTERM/SIGINT: no new step starts, the run closes INTERRUPTED
    stop_grace: float = 10.0  # seconds a step already trading gets to finish once interrupted
    busy_wait: float | None = None  # seconds a step waits for a busy account lease, then REFUSED; None:
    # the playbook's ``account_busy.wait``, else DEFAULT_BUSY_WAIT
    run_id: str | None = None  # fixed by a fire or a plan (never re-derived); None: runner.ids.run_id_in
    # prepare()'s journal round trips in worker threads: a run prepared at its instant (a fire taken over)
    # must not hold up the event loop the other fires of that instant send from
    journal_off_loop: bool = False


@dataclass(frozen=True, slots=True)
class StepReport:
    step_id: str
    kind: str
    outcome: StepOutcome
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    group: GroupLabel | None = None  # the ``parallel`` group it is a member of


@dataclass(frozen=True, slots=True)
class RunReport:
    run_id: str
    playbook: str
    account: str
    status: RunStatus
    resumed: bool
    steps: tuple[StepReport, ...]

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.STOPPED)


_BLOCKING = (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED)  # only exit steps run after


async def _written(deferred: DeferredJournal) -> None:
    """Its queued rows written in a worker thread (no hop when nothing is queued)."""
    if deferred.has_queued():
        await off_loop(deferred.write_queued)


def run_id_for(playbook: Playbook, scheduled_for: dt.datetime) -> str:
    return make_run_id(playbook.name, scheduled_for, ZoneInfo(playbook.timezone))


def run_status(outcomes: Sequence[StepOutcome]) -> RunStatus:
    if StepOutcome.FAILED in outcomes:
        return RunStatus.FAILED
    if StepOutcome.REFUSED in outcomes:
        return RunStatus.REFUSED
    if StepOutcome.STOPPED in outcomes:
        return RunStatus.STOPPED
    return RunStatus.SUCCEEDED


def _report(record: RunRecord, status: RunStatus, steps: dict[str, StepRecord], pb: Playbook) -> RunReport:
    reports = []
    for s in pb.steps:
        r = steps.get(s.id)
        if r is not None:
            group = label_of(pb, s.id)
            reports.append(
                StepReport(s.id, s.kind, r.outcome, r.message or "", r.started_at, r.finished_at, group)
            )
    return RunReport(record.run_id, pb.name, record.account, status, record.resumed, tuple(reports))


class Engine:
    """One run of one playbook. Small on purpose: timing and bookkeeping here, step logic in
    runner.engine.steps."""

    def __init__(
        self,
        playbook: Playbook,
        broker: Broker,
        journal: Journal,
        clock: Clock,
        *,
        account: str,
        options: RunOptions,
        observer: Observer | None = None,
    ) -> None:
        self.pb = playbook
        self.broker = broker
        self.journal = journal
        self.clock = clock
        self.account = account
        self.options = options
        self.tz = ZoneInfo(playbook.timezone)
        self.run_id = options.run_id or run_id_in(
            journal.has_run, options.run_key or playbook.name, options.scheduled_for, self.tz
        )
        # alerts (runner.alerts): the run's events also reach the team; the same observer when alerts are off
        observer = alert_observer(playbook, account, self.run_id, observer)
        self.observer = observer
        self.log = get_logger(run=self.run_id, playbook=playbook.name, account=account)
        self.halts: _HaltNotes | None = None
        if isinstance(broker, GuardedBroker):  # kill switch: a refused order makes its step REFUSED
            self.halts = _HaltNotes(broker)
            broker = cast(Broker, self.halts)
        self.gateway = Gateway(
            broker=broker,
            journal=journal,
            clock=clock,
            run_id=self.run_id,
            account=account,
            risk=RiskChecker(playbook, options.risk),
            tuning=options.tuning,
            observer=observer,
            log=self.log,
        )
        self.record: RunRecord | None = None
        self.done: dict[str, StepRecord] = {}
        self.owner = options.owner or ProcessIdentity.current().token
        self._step_task: asyncio.Future[Any] | None = None
        self._trading = False  # the current step passed its timing wait and runs its handler
        if options.interrupt is not None:
            options.interrupt.on_request(self._on_interrupt)
        self._prepared = False
        self._staged: _Staged | None = None
        self._sent_early = False  # the staged request was written ahead (send_armed)
        self.leases = leases_for(journal.engine)
        self._lease: Lease | None = None  # held for the step in progress (runner.engine.leases)
        self.ctx = RunContext(
            playbook=playbook,
            run_id=self.run_id,
            gateway=self.gateway,
            clock=clock,
            tz=self.tz,
            run_date=options.scheduled_for.astimezone(self.tz).date(),
            log=self.log,
            busy_wait=playbook.busy_wait(options.busy_wait, DEFAULT_BUSY_WAIT),
        )

    def _emit(
        self, kind: EventKind, step_id: str | None = None, message: str = "", outcome: str | None = None
    ) -> None:
        if self.observer is not None:
            self.observer(EngineEvent(kind, self.clock.now(), step_id, message, None, outcome))

    async def prepare(
        self,
        commit: GroupCommit | None = None,
        *,
        run_absent: bool | None = None,
        set_up: Callable[[], None] | None = None,
    ) -> None:
        """Everything before the first step, done ahead of the scheduled instant: open the run, connect,
        reconcile. With ``commit``, a fresh run whose first step is a plain ``place`` is also *armed*:
        that order is built and passes the pre-trade checks, and its run row, step row and intent are
        committed now (one group commit shared by the runs prepared together,
        :mod:`runner.journal.groupcommit`),
        stamped with the instant (or with when it was prepared, if that was later: a fire taken over or
        caught up). At the instant nothing but the send is left. Nothing is sent here.

        Armed is journaled: a crash before the instant leaves a PENDING intent that the next start
        resolves by lookup like any request that may have left (never a blind re-send). A halt, shutdown
        or late release, which this process knows left nothing out, discards the armed rows again.
        ``run_absent``: the caller looked the run up already (with building the engine, in one hop).
        ``set_up()`` is called once connected and reconciled: the account's other runs need not wait for
        this one's lease and armed commit (they take their own)."""
        if self._prepared:
            return
        self._prepared = True
        off = self.options.journal_off_loop
        if run_absent is None and commit is not None:
            run_absent = await self._db(self.journal.get_run, self.run_id) is None
        fresh = commit is not None and bool(run_absent)
        if not fresh:
            self.record = await self._open_run_prepared()
        # off the loop: the connect's and the reconcile's call and order rows are queued, then written
        # together in a worker thread (runner.journal.bookkeeping), as an armed run's are after its send
        deferred = DeferredJournal(self.journal, self.log) if off else None
        if deferred is not None:
            self.gateway.journal = cast(Journal, deferred)
        try:
            if self.options.connect:
                await self._connect()
            if self.options.reconcile:
                await self._close_dead_runs_prepared()  # first: their unsettled intents are reconciled too
                await self.gateway.reconcile(off_loop=off)
        except Exception as exc:  # never left RUNNING: a missing credential, an unreachable broker...
            if deferred is not None:
                self.gateway.journal = self.journal
                await _written(deferred)
            if self.record is not None:
                why = f"failed before its first step: {type(exc).__name__}: {exc}"
                self.journal.finish_run(self.run_id, RunStatus.FAILED, self.clock.now(), why)
                self.log.error("run_failed_to_start", error=why)
                self._emit(EventKind.RUN_FINISHED, message=why, outcome=RunStatus.FAILED.value)
            raise
        if deferred is not None:
            self.gateway.journal = self.journal
            await _written(deferred)
        if set_up is not None:
            set_up()
        await lease_ahead(self)
        if fresh:
            assert commit is not None
            staged = await stage_first(self, commit)
            if staged is not None:
                try:
                    await commit.commit(staged.rows, staged.armed_at)
                    self._staged = staged
                    # logged now: at the instant nothing but the request may run
                    self.log.info("run_start", resumed=False, starts=1, armed=True)
                except DuplicateIntent:  # created meanwhile (another process): the ordinary path
                    staged = None
                except BaseException:  # cancelled (shutdown) or failed once the commit was queued
                    self._staged = None
                    if self.journal.has_intent(staged.intent.client_order_id):  # it landed: take it back
                        self._disarm(staged, "preparation interrupted")
                    raise
            if staged is None:
                self.record = self._open_run()
        self.done = await self._db(self.journal.steps_of, self.run_id) if self.record is not None else {}

    async def _db(self, call: Callable[..., _T], *args: Any) -> _T:
        """A journal round trip of :meth:`prepare`: in a worker thread with ``journal_off_loop``."""
        if self.options.journal_off_loop:
            return await off_loop(call, *args)
        return call(*args)

    async def _open_run_prepared(self) -> RunRecord:
        if not self.options.journal_off_loop:
            return self._open_run()
        record = await off_loop(self._start_run)
        self._started(record)
        return record

    async def _close_dead_runs_prepared(self) -> None:
        if not self.options.journal_off_loop:
            return self._close_dead_runs()
        closer = self._closer()
        close = partial(self.journal.close_dead_runs, self.account, self.clock.now(), closer=closer)
        closed = await off_loop(close)
        self._dead_runs_closed(closed, closer)

    @property
    def armed_request(self) -> OrderRequest | None:
        """The armed first order (its intent committed), to prime (runner.brokers.primed); else None."""
        return self._staged.intent.request if self._staged is not None else None

    def send_armed(self, released: dt.datetime | None) -> bool:
        """At the instant (its burst ``released`` then), before anything else of the run: the armed
        first order's primed request written now (runner.brokers.primed), when nothing on its path would
        stop it (on time, the kill switch NORMAL, a rate-limit token free); its step then only reads the
        reply. True if written."""
        staged = self._staged
        if staged is None or released is None or released - staged.armed_at > LATE_GRACE:
            return False
        self._sent_early = write_primed(self.gateway.broker, staged.intent.request)
        return self._sent_early

    def _disarm(self, staged: _Staged, reason: str) -> None:
        """Its request never left this process: take the armed rows back out of the journal. If the
        journal refuses (something else touched the intent, e.g. another run looked it up), the run is
        closed FAILED instead, so the account's next run looks the intent up; never left RUNNING."""
        cid = staged.intent.client_order_id
        unprime(self.gateway.broker, cid)
        try:
            self.journal.discard_armed(self.run_id, cid)
        except JournalError as exc:
            self.log.error("run_disarm_refused", client_order_id=cid, reason=reason, error=str(exc))
            why = f"{reason}; armed order {cid} not sent, left for the account's next run to look up"
            self.journal.finish_run(self.run_id, RunStatus.FAILED, self.clock.now(), why)
            self._emit(EventKind.RUN_FINISHED, message=RunStatus.FAILED.value, outcome=RunStatus.FAILED.value)
        else:
            self.log.info("run_disarmed", reason=reason)

    async def abandon(self, reason: str, status: RunStatus = RunStatus.STOPPED) -> None:
        """Prepared, never executed (halted or shutting down before the instant). Nothing was sent. An
        armed run is taken back out of the journal; an opened run is closed with ``status`` and why."""
        staged, self._staged = self._staged, None
        if staged is not None:
            self._disarm(staged, reason)
        drop_lease(self)
        if self.record is not None:
            self.journal.finish_run(self.run_id, status, self.clock.now(), reason)
            self.log.info("run_abandoned", status=status.value, reason=reason)
            self._emit(EventKind.RUN_FINISHED, message=status.value, outcome=status.value)

    def _close_dead_runs(self) -> None:
        closer = self._closer()
        closed = self.journal.close_dead_runs(self.account, self.clock.now(), closer=closer)
        self._dead_runs_closed(closed, closer)

    def _closer(self) -> str:
        return f"{self.options.mode} {self.run_id} ({ProcessIdentity.from_token(self.owner)})"

    def _dead_runs_closed(self, closed: Sequence[RunRecord], closer: str) -> None:
        for run in closed:
            self.log.warning("dead_run_closed", dead_run=run.run_id, owner=run.owner)
            publish_dead_run_closed(self.account, run.run_id, run.playbook, closer)

    def _open_run(self) -> RunRecord:
        record = self._start_run()
        self._started(record)
        return record

    def _start_run(self) -> RunRecord:
        return self.journal.start_run(
            self.run_id,
            playbook=self.pb.name,
            account=self.account,
            scheduled_for=self.options.scheduled_for,
            mode=self.options.mode,
            now=self.clock.now(),
            owner=self.owner,
            timezone=self.pb.timezone,
            master_sha=resolved_sha(self.account),
        )

    def _started(self, record: RunRecord) -> None:
        self.log.info("run_start", resumed=record.resumed, starts=record.starts)
        self._emit(EventKind.RUN_STARTED, message="resumed" if record.resumed else "started")

    async def execute(self) -> RunReport:
        try:
            return await self._execute()
        except Exception as exc:  # the journal failing (disk full), an error outside any step: closed
            self._close_aborted(exc)
            raise
        finally:
            drop_lease(self)  # also when an error escapes the run

    def _close_aborted(self, exc: Exception) -> None:
        """FAILED with the reason, if still RUNNING, so no run is left `running` by an error escaping it.
        Best effort: the error may be the journal itself (the caller reports it either way)."""
        why = f"aborted: {type(exc).__name__}: {exc}"
        try:
            self.journal.close_interrupted_run(self.run_id, self.clock.now(), why, RunStatus.FAILED)
        except Exception as also:
            self.log.error("run_not_closed", error=why, close_error=f"{type(also).__name__}: {also}")

    async def _execute(self) -> RunReport:
        await self.prepare()
        staged, self._staged = self._staged, None
        first = await self._run_staged(staged) if staged is not None else None
        if self.record is None:  # staged but not committed (released late, or its rows collided)
            self.record = self._open_run()
            self.done = self.journal.steps_of(self.run_id)
        record, done = self.record, self.done
        outcomes: list[StepOutcome] = [r.outcome for r in done.values() if r.outcome.is_final]
        blocked = any(o in _BLOCKING for o in outcomes)
        previous_end: dt.datetime | None = None
        not_started: list[str] = []
        cut_short: str | None = None
        for position, step in enumerate(self.pb.steps):
            prior = done.get(step.id)
            group = self.pb.group_of(step.id)
            if group is not None:  # a parallel group: run once, at its first member (runner.engine.group)
                if group.steps[0].id != step.id:
                    continue
                ran = await run_group(self, group, done, blocked=blocked, previous_end=previous_end)
                outcomes += ran.outcomes
                not_started += ran.not_started
                cut_short = ran.cut_short or cut_short
                blocked = blocked or any(o in _BLOCKING for o in ran.outcomes)
                previous_end = self.clock.now() if ran.outcomes else previous_end
                continue
            if first is not None and position == 0:
                result = first
            elif prior is not None and prior.outcome.is_final:
                previous_end = prior.finished_at
                continue
            elif self._stopping():  # a process being stopped starts no step, exit steps included
                not_started.append(step.id)
                continue
            elif blocked and step.kind not in EXIT_KINDS:
                result = StepResult.skipped("an earlier step failed or stopped the run")
                self._start(step, position)
            else:
                stepped = await self._run_step_interruptibly(
                    step, position, resumed=prior is not None, previous_end=previous_end
                )
                if stepped is None:  # interrupted in its timing wait, or cut short while trading
                    if self._trading:
                        cut_short = step.id
                    else:
                        not_started.append(step.id)
                    continue
                result = stepped
            self._finish(step, result)
            if first is not None and position == 0 and len(self.pb.steps) > 1:
                await self._bookkept(keep=False)  # later steps journal as ever (a wait could be long)
            previous_end = self.clock.now()
            outcomes.append(result.outcome)
            if result.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED):
                blocked = True
        await self._bookkept(keep=True)  # (an armed run's) before the read-back reads the journal
        await self.gateway.read_back()  # the run's open orders as the broker has them now, then close
        status = run_status(outcomes)
        message = None
        if self._stopping():
            status, message = RunStatus.INTERRUPTED, self._interrupted_message(not_started, cut_short)
            self.log.warning("run_interrupted", message=message)
        self.journal.finish_run(self.run_id, status, self.clock.now(), message)
        await self._bookkept(keep=False)
        self.log.info("run_finish", status=status.value)
        self._emit(EventKind.RUN_FINISHED, message=status.value, outcome=status.value)
        return _report(record, status, self.journal.steps_of(self.run_id), self.pb)

    async def _bookkept(self, *, keep: bool) -> None:
        """An armed run's queued bookkeeping committed (with other runs', off the loop); unless ``keep``,
        its journal writes at once again from here on."""
        deferred = self.journal
        if isinstance(deferred, DeferredJournal):
            await deferred.flush()
            if not keep:
                self.journal = self.gateway.journal = cast(Journal, deferred.inner)

    def _stopping(self) -> bool:
        return self.options.interrupt is not None and self.options.interrupt.requested

    def _on_interrupt(self) -> None:
        """A step waiting for its time is abandoned now; one already trading gets ``stop_grace``."""
        task = self._step_task
        if task is None or task.done():
            return
        if self._trading:
            asyncio.get_running_loop().call_later(self.options.stop_grace, task.cancel)
        else:
            task.cancel()

    async def _run_step_interruptibly(
        self, step: Any, position: int, *, resumed: bool, previous_end: dt.datetime | None
    ) -> StepResult | None:
        """``_run_step`` in a task the interrupt may cancel; None when it did. Without an interrupt it
        runs inline (a BaseException such as a simulated crash then propagates as it always did)."""
        self._trading = False
        work = self._run_step(step, position, resumed=resumed, previous_end=previous_end)
        return await self._run_unit(work)

    async def _run_unit(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """``work`` (a step, or a parallel group) as the unit the interrupt may cancel; None when it did."""
        if self.options.interrupt is None:
            return await work
        task = asyncio.ensure_future(work)
        self._step_task = task
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if not task.cancelled() or (me is not None and me.cancelling()):
                raise  # we are cancelled ourselves (a shutdown), not the step by the interrupt
            return None
        finally:
            self._step_task = None

    def _interrupted_message(self, not_started: Sequence[str], cut_short: str | None) -> str:
        assert self.options.interrupt is not None
        parts = [f"interrupted by {self.options.interrupt.name}"]
        if cut_short is not None:
            parts.append(f"step {cut_short} cut short (its orders are looked up by the account's next run)")
        if not_started:
            parts.append(f"not started: {', '.join(not_started)}")
        return "; ".join(parts)

    async def _run_staged(self, staged: _Staged) -> StepResult | None:
        """At the instant: the armed request goes out (its rows are committed). None when released more
        than LATE_GRACE late: the rows are discarded and the ordinary path (with its late rules) runs."""
        # Released on time with its burst, the fire is on time even if its turn came seconds later (the
        # burst's own fires ahead of it): disarming then would add journal writes to the burst.
        released = released_at()
        now = self.clock.now() if released is None else released
        if now - staged.armed_at > LATE_GRACE and not self._sent_early:
            self._disarm(staged, "released late")
            return None
        # The intent is stamped when armed, not at the send: at most LATE_GRACE earlier, which only
        # shortens the gateway's ``absent_after`` (60 s) wait by that much.
        # After the send the run's bookkeeping is queued and group-committed off the loop (_bookkept)
        deferred = DeferredJournal(self.journal, self.log)
        self.journal = self.gateway.journal = cast(Journal, deferred)
        step = staged.step
        held = _HeldLog(staged.log)  # the log write waits until the request left
        gw = self.gateway.for_step(
            step.id,
            held,
            journal=cast(Journal, _Precommitted(self.gateway.journal, staged.intent)),
            risk=None,  # checked while preparing
            broker=cast(Broker, _YieldAfterPlace(self._staged_broker(staged), held.release)),
        )
        gw.staged[step.id] = staged.intent.request
        slot, armed = self.options.scheduled_for, staged.armed_at
        self.record = RunRecord(
            self.run_id, self.pb.name, self.account, self.options.mode, slot, armed, armed, None, 1,
            RunStatus.RUNNING, None,
        )  # fmt: skip
        self._emit(EventKind.RUN_STARTED, message="started")
        self._emit(EventKind.STEP_STARTED, step.id, step.description or step.kind)
        try:
            return await self._handle(step, held, gw)
        finally:
            held.release()
            gw.staged.pop(step.id, None)

    def _staged_broker(self, staged: _Staged) -> Broker:
        if not self._sent_early:
            return self.gateway.broker
        adapter = adapter_of(self.gateway.broker)
        return cast(Broker, _SentEarly(self.gateway.broker, adapter, staged.intent.client_order_id))

    async def _connect(self) -> None:
        await self.gateway.call("connect", self.broker.connect)
        if self.options.journal_off_loop:  # a journal read (for brokers that map client ids)
            await off_loop(self.gateway.adopt_client_ids)
            return
        self.gateway.adopt_client_ids()  # a broker mapping our ids one way in memory learns them again

    def _start(self, step: Any, position: int) -> None:
        group = self.pb.group_of(step.id)
        self.journal.start_step(
            self.run_id,
            step.id,
            position=position,
            kind=step.kind,
            now=self.clock.now(),
            parallel_group=group.id if group is not None else None,
        )
        self._emit(EventKind.STEP_STARTED, step.id, step.description or step.kind)

    def _finish(self, step: Any, result: StepResult) -> None:
        self.journal.finish_step(self.run_id, step.id, result.outcome, self.clock.now(), result.message)
        level = "warning" if result.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED) else "info"
        getattr(self.log, level)(
            "step_finish", step=step.id, outcome=result.outcome.value, message=result.message
        )
        self._emit(EventKind.STEP_FINISHED, step.id, result.message, result.outcome.value)
        if self.pb.group_of(step.id) is None:  # a group's lease is dropped by the group (engine.group)
            if isinstance(self.journal, DeferredJournal) and self._lease is not None:
                lease, self._lease = self._lease, None  # its row goes with the bookkeeping (flushed next)
                self.journal.defer(self.leases.release_later(lease))
            else:
                drop_lease(self)

    async def _run_step(
        self, step: Any, position: int, *, resumed: bool, previous_end: dt.datetime | None
    ) -> StepResult:
        if not resumed:  # a step that already started is finished now, whatever the time
            late = await self._wait_timing(step, previous_end)
            if late is not None:
                self._start(step, position)
                return StepResult.skipped(late)
        refused = await take_lease(self, step)  # after the wait for ``at``: nobody blocked meanwhile
        self._start(step, position)
        if refused is not None:
            return refused
        self._trading = True
        return await self._handle(step)

    async def _handle(self, step: Any, log: Any = None, gateway: Gateway | None = None) -> StepResult:
        if self.halts is None:
            return await self._dispatch(step, log, gateway)
        with self.halts.watch(step.id):
            result = await self._dispatch(step, log, gateway)
        halted = self.halts.take(step.id)
        if halted is not None and result.outcome is StepOutcome.FAILED:
            self.log.warning("kill_switch_refused", step=step.id, error=str(halted))
            return StepResult(StepOutcome.REFUSED, f"refused by the kill switch: {halted}", result.orders)
        return result

    def step_context(self, step: Any, log: Any = None, gateway: Gateway | None = None) -> RunContext:
        """The context one step's handler gets: the run's, with the step's own gateway view (its step id
        and logger label its intents, call rows and notes) so concurrent steps never share them."""
        log = log or self.log.bind(step=step.id)
        gw = gateway or self.gateway.for_step(step.id, log)
        return dataclasses.replace(self.ctx, gateway=gw, log=log)

    async def _dispatch(self, step: Any, log: Any = None, gateway: Gateway | None = None) -> StepResult:
        ctx = self.step_context(step, log, gateway)
        log = ctx.log
        try:
            await resolve_for_step(ctx, step)  # rolling instruments: once per run, journaled
            return await HANDLERS[step.kind](ctx, step)
        except RiskRefused as exc:
            log.warning("risk_refused", error=str(exc))
            return StepResult(StepOutcome.REFUSED, f"refused by pre-trade limits: {exc}")
        except StepRefused as exc:
            log.warning("step_refused", error=str(exc))
            return StepResult(StepOutcome.REFUSED, str(exc))
        except StepError as exc:
            return StepResult.failed(str(exc))
        except BrokerError as exc:
            log.error("broker_error", error=str(exc), error_type=type(exc).__name__)
            return StepResult.failed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug fails its step, not the run: exit steps still run, run closed
            log.exception("step_unexpected_error", error=str(exc), error_type=type(exc).__name__)
            return StepResult.failed(f"unexpected error: {type(exc).__name__}: {exc}")

    async def _wait_timing(self, step: Any, previous_end: dt.datetime | None) -> str | None:
        """Sleep until the step may start. Returns why it is skipped when it is reached too late."""
        if step.at is not None and not self.options.ignore_at:
            target = self.ctx.local_instant(step.at)
            if self.clock.now() - target > LATE_GRACE:
                too_late = late_reason(self.pb, step, target, self.clock.now())
                if too_late is not None:
                    return too_late
            else:
                if target > self.clock.now() and self.observer is not None:  # say what it waits for
                    at = self.clock.now()
                    self.observer(EngineEvent(EventKind.WAITING, at, step.id, f"at {step.at}", until=target))
                await self.clock.sleep_until(target)
        if step.after is not None:
            start = previous_end or self.clock.now()
            await self.clock.sleep_until(start + parse_duration(step.after))
        return None


def late_reason(pb: Playbook, step: Any, target: dt.datetime, now: dt.datetime) -> str | None:
    """Why a step reached at ``now`` for its ``at`` = ``target`` is skipped under its late policy, or None."""
    lateness = now - target
    if lateness <= LATE_GRACE:
        return None
    policy = step.late or (pb.schedule.late if pb.schedule else "skip")
    window = parse_duration(policy.split()[1]) if policy.startswith("run-within") else dt.timedelta(0)
    if lateness > window:
        return f"late by {lateness.total_seconds():.0f}s for at {step.at} (late: {policy})"
    return None


async def execute(
    playbook: Playbook,
    broker: Broker,
    journal: Journal,
    clock: Clock,
    *,
    account: str,
    options: RunOptions,
    observer: Observer | None = None,
) -> RunReport:
    return await Engine(
        playbook, broker, journal, clock, account=account, options=options, observer=observer
    ).execute()
