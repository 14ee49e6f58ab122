"""Run a validated playbook against a broker: timing, step dispatch, journaling, resume.

``execute`` is the one entry point (used by ``runner run``, ``rehearse``, ``apply`` and the scheduler):

1. open (or resume) the run in the journal; the run id is deterministic (:func:`runner.ids.run_id`);
2. connect, then reconcile every unsettled intent of the account by client id before anything is sent;
3. for each step not already finished: honour ``at`` / ``after`` / ``late`` on the injected clock, then
   dispatch on ``kind`` (:data:`runner.steps.HANDLERS`). After a failed / refused / stopping step, only
   risk-reducing steps (cancel, square_off) still run.

A step's outcome says what is true at the broker; handler modules read orders and positions back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.base import Broker
from runner.clock import Clock
from runner.errors import BrokerError
from runner.gateway import EngineEvent, EventKind, Gateway, Observer, Tuning
from runner.ids import run_id as make_run_id
from runner.journal import Journal, RunRecord, RunStatus, StepOutcome, StepRecord
from runner.logs import get_logger
from runner.playbook import Playbook, parse_duration
from runner.risk import RiskChecker, RiskConfig, RiskRefused
from runner.steps import EXIT_KINDS, HANDLERS, RunContext, StepResult
from runner.steps.common import StepError

LATE_GRACE = dt.timedelta(seconds=1)  # reaching a step this long after its ``at`` counts as late


@dataclass(frozen=True, slots=True)
class RunOptions:
    scheduled_for: dt.datetime  # the slot this run belongs to; with the playbook name it fixes the run id
    mode: str = "run"  # run | rehearse | apply | scheduled (journal label only)
    ignore_at: bool = False  # ``--now``: do not wait for ``at`` times (``after`` still applies)
    risk: RiskConfig | None = None
    tuning: Tuning = field(default_factory=Tuning)
    run_key: str | None = None  # names the run id instead of the playbook (rehearsals use their own ids)


@dataclass(frozen=True, slots=True)
class StepReport:
    step_id: str
    kind: str
    outcome: StepOutcome
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


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


def run_id_for(playbook: Playbook, scheduled_for: dt.datetime) -> str:
    return make_run_id(playbook.name, scheduled_for)


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
            reports.append(StepReport(s.id, s.kind, r.outcome, r.message or "", r.started_at, r.finished_at))
    return RunReport(record.run_id, pb.name, record.account, status, record.resumed, tuple(reports))


class Engine:
    """One run of one playbook. Small on purpose: timing and bookkeeping here, step logic in runner.steps."""

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
        self.observer = observer
        self.tz = ZoneInfo(playbook.timezone)
        self.run_id = make_run_id(options.run_key or playbook.name, options.scheduled_for)
        self.log = get_logger(run=self.run_id, playbook=playbook.name, account=account)
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
        self.ctx = RunContext(
            playbook=playbook,
            run_id=self.run_id,
            gateway=self.gateway,
            clock=clock,
            tz=self.tz,
            run_date=options.scheduled_for.astimezone(self.tz).date(),
            log=self.log,
        )

    def _emit(
        self, kind: EventKind, step_id: str | None = None, message: str = "", outcome: str | None = None
    ) -> None:
        if self.observer is not None:
            self.observer(EngineEvent(kind, self.clock.now(), step_id, message, None, outcome))

    async def execute(self) -> RunReport:
        record = self.journal.start_run(
            self.run_id,
            playbook=self.pb.name,
            account=self.account,
            scheduled_for=self.options.scheduled_for,
            mode=self.options.mode,
            now=self.clock.now(),
        )
        self.log.info("run_start", resumed=record.resumed, starts=record.starts)
        self._emit(EventKind.RUN_STARTED, message="resumed" if record.resumed else "started")
        await self._connect()
        await self.gateway.reconcile()
        done = self.journal.steps_of(self.run_id)
        outcomes: list[StepOutcome] = [r.outcome for r in done.values() if r.outcome.is_final]
        blocked = any(o in (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED) for o in outcomes)
        previous_end: dt.datetime | None = None
        for position, step in enumerate(self.pb.steps):
            prior = done.get(step.id)
            if prior is not None and prior.outcome.is_final:
                previous_end = prior.finished_at
                continue
            if blocked and step.kind not in EXIT_KINDS:
                result = StepResult.skipped("an earlier step failed or stopped the run")
                self._start(step, position)
            else:
                result = await self._run_step(
                    step, position, resumed=prior is not None, previous_end=previous_end
                )
            self._finish(step, result)
            previous_end = self.clock.now()
            outcomes.append(result.outcome)
            if result.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED):
                blocked = True
        status = run_status(outcomes)
        self.journal.finish_run(self.run_id, status, self.clock.now())
        self.log.info("run_finish", status=status.value)
        self._emit(EventKind.RUN_FINISHED, message=status.value, outcome=status.value)
        return _report(record, status, self.journal.steps_of(self.run_id), self.pb)

    async def _connect(self) -> None:
        await self.gateway.call("connect", self.broker.connect)

    def _start(self, step: Any, position: int) -> None:
        self.gateway.step_id = step.id
        self.journal.start_step(self.run_id, step.id, position=position, kind=step.kind, now=self.clock.now())
        self._emit(EventKind.STEP_STARTED, step.id, step.description or step.kind)

    def _finish(self, step: Any, result: StepResult) -> None:
        self.journal.finish_step(self.run_id, step.id, result.outcome, self.clock.now(), result.message)
        level = "warning" if result.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED) else "info"
        getattr(self.log, level)(
            "step_finish", step=step.id, outcome=result.outcome.value, message=result.message
        )
        self._emit(EventKind.STEP_FINISHED, step.id, result.message, result.outcome.value)
        self.gateway.step_id = None

    async def _run_step(
        self, step: Any, position: int, *, resumed: bool, previous_end: dt.datetime | None
    ) -> StepResult:
        if not resumed:  # a step that already started is finished now, whatever the time
            late = await self._wait_timing(step, previous_end)
            if late is not None:
                self._start(step, position)
                return StepResult.skipped(late)
        self._start(step, position)
        log = self.log.bind(step=step.id)
        self.gateway.log = log
        try:
            return await HANDLERS[step.kind](self.ctx, step)
        except RiskRefused as exc:
            log.warning("risk_refused", error=str(exc))
            return StepResult(StepOutcome.REFUSED, f"refused by pre-trade limits: {exc}")
        except StepError as exc:
            return StepResult.failed(str(exc))
        except BrokerError as exc:
            log.error("broker_error", error=str(exc), error_type=type(exc).__name__)
            return StepResult.failed(f"{type(exc).__name__}: {exc}")
        finally:
            self.gateway.log = self.log

    async def _wait_timing(self, step: Any, previous_end: dt.datetime | None) -> str | None:
        """Sleep until the step may start. Returns why it is skipped when it is reached too late."""
        if step.at is not None and not self.options.ignore_at:
            target = self.ctx.local_instant(step.at)
            lateness = self.clock.now() - target
            if lateness > LATE_GRACE:
                policy = step.late or (self.pb.schedule.late if self.pb.schedule else "skip")
                window = (
                    parse_duration(policy.split()[1]) if policy.startswith("run-within") else dt.timedelta(0)
                )
                if lateness > window:
                    return f"late by {lateness.total_seconds():.0f}s for at {step.at} (late: {policy})"
            else:
                await self.clock.sleep_until(target)
        if step.after is not None:
            start = previous_end or self.clock.now()
            await self.clock.sleep_until(start + parse_duration(step.after))
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
