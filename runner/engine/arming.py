"""Arming a run's first step ahead of its instant (:meth:`runner.engine.core.Engine.prepare`), and the
wrappers the engine puts around the journal, broker and logger while a step runs.

:func:`stage_first` builds and risk-checks a fresh run's first ``place`` and converts its rows for the
group commit (:mod:`runner.journal.groupcommit`); at the instant the engine sends it through
:class:`_Precommitted`, :class:`_YieldAfterPlace` and :class:`_HeldLog`. :class:`_HaltNotes` notes the
kill switch's refusals so the engine reports a step REFUSED, not FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.brokers.base import Broker
from runner.brokers.burst import after_send
from runner.engine.killswitch import GuardedBroker, Halted
from runner.engine.risk import RiskRefused
from runner.engine.steps.common import StepError, build_request
from runner.ids import client_order_id
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, RunStatus, StepOutcome
from runner.model import Modification, MultilegRequest, Order, OrderRequest

if TYPE_CHECKING:
    from runner.engine.core import Engine
    from runner.journal.groupcommit import GroupCommit
    from runner.journal.groupcommit import Staged as StagedRows

LATE_GRACE = dt.timedelta(seconds=1)  # reaching a step this long after its ``at`` counts as late


async def stage_first(engine: Engine, commit: GroupCommit) -> _Staged | None:
    """The first step's order built, risk-checked and its rows converted ahead of time; None when it
    cannot be staged (the ordinary path then runs it, with the same checks and messages)."""
    if not engine.pb.steps:
        return None
    step = engine.pb.steps[0]
    if step.kind != "place" or step.after is not None or engine.pb.group_of(step.id) is not None:
        return None  # a parallel group's members start together (runner.engine.group)
    if engine._lease is None or engine._lease.step_id != step.id:  # busy account: the ordinary path waits
        return None
    slot = engine.options.scheduled_for
    # Prepared after its instant (taken over from a dead daemon, a catch-up, a claim after an outage;
    # the daemon judged its ``late:`` policy then): armed as of now, so it is not "released late" for
    # being prepared late, and its rows are stamped when they were written, never before.
    armed_at = max(slot, engine.clock.now())
    if step.at is not None and not engine.options.ignore_at:
        target = engine.ctx.local_instant(step.at)
        if target > slot or armed_at - target > LATE_GRACE:
            return None
    try:
        request = build_request(engine.pb, step)
    except StepError:
        return None
    request = dataclasses.replace(request, client_order_id=client_order_id(engine.run_id, step.id, 0, 0))
    risk = engine.gateway.risk
    if risk is not None:
        ref = await engine.gateway.reference_price(request.instrument) if risk.needs_price else None
        try:
            risk.check(request, orders_so_far=0, reference_price=ref)  # a fresh run has no orders yet
        except RiskRefused:
            return None
    intent = Intent(
        client_order_id=request.client_order_id,
        run_id=engine.run_id,
        account=engine.account,
        step_id=step.id,
        slot=step.id,
        leg=0,
        attempt=0,
        purpose=Purpose.ENTRY,
        request=request,
        created_at=slot,  # placeholder: the commit stamps the instant it is written
    )
    run_row = {
        "run_id": engine.run_id,
        "playbook": engine.pb.name,
        "account": engine.account,
        "mode": engine.options.mode,
        "scheduled_for": slot,
        "starts": 1,
        "status": RunStatus.RUNNING.value,
        "owner": engine.owner,  # armed in the same group commit: no round trip at the instant
        "timezone": engine.pb.timezone,
    }
    step_row = {
        "run_id": engine.run_id,
        "step_id": step.id,
        "position": 0,
        "kind": step.kind,
        "outcome": StepOutcome.RUNNING.value,
    }
    rows = commit.stage(run_row, step_row, intent)
    return _Staged(step, intent, rows, engine.log.bind(step=step.id), armed_at)


@dataclass(frozen=True, slots=True)
class _Staged:
    step: Any  # the first PlaceStep
    intent: Intent  # its order: client id filled in, pre-trade checks passed
    rows: StagedRows  # run, step and intent rows, converted for the group commit
    log: Any  # the step's bound logger (binding costs ~0.1 ms cold at the instant)
    armed_at: dt.datetime  # its instant, or when it was prepared if that was later; its rows' stamp


class _Precommitted:
    """The run's journal for its staged first step: the gateway's ``add_intent`` of the intent the group
    commit already wrote is a no-op (only if it is that exact intent); everything else passes through."""

    def __init__(self, inner: Journal, intent: Intent) -> None:
        self._inner = inner
        self._intent: Intent | None = intent

    def add_intent(self, intent: Intent) -> None:
        mine = self._intent
        if (
            mine is not None
            and intent.client_order_id == mine.client_order_id
            and (intent.request is mine.request or intent.request == mine.request)
        ):
            self._intent = None
            return
        self._inner.add_intent(intent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# The step whose handler is running in this asyncio task: members of a parallel group are tasks of their
# own (each with a copy of the context), so a refusal is noted for the member whose call it refused.
_HALT_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar("runner_halt_step", default=None)


class _HaltNotes:
    """Notes the kill switch's refusals (:class:`runner.engine.killswitch.Halted`) on their way to the
    gateway, which journals them as rejected orders: the engine then reports the step REFUSED, not FAILED.
    Keyed by step (:meth:`watch`), never one note per run: concurrent members must not take each other's."""

    def __init__(self, inner: GuardedBroker) -> None:
        self._inner = inner
        self._by_step: dict[str | None, Halted] = {}

    @contextlib.contextmanager
    def watch(self, step_id: str) -> Iterator[None]:
        """Refusals of calls made inside this block (this task and those it starts) are ``step_id``'s."""
        self._by_step.pop(step_id, None)
        token = _HALT_STEP.set(step_id)
        try:
            yield
        finally:
            _HALT_STEP.reset(token)

    def take(self, step_id: str) -> Halted | None:
        """The kill switch's last refusal of ``step_id``'s calls (forgotten once taken)."""
        return self._by_step.pop(step_id, None)

    def _note(self, exc: Halted) -> None:
        self._by_step[_HALT_STEP.get()] = exc

    async def place(self, request: OrderRequest) -> Order:
        try:
            return await self._inner.place(request)
        except Halted as exc:
            self._note(exc)
            raise

    async def modify(self, order: Order, change: Modification) -> Order:
        try:
            return await self._inner.modify(order, change)
        except Halted as exc:
            self._note(exc)
            raise

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        try:
            return await self._inner.place_multileg(request)
        except Halted as exc:
            self._note(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _SentEarly:
    """The armed order's request was written ahead of its run's path, past the kill switch as it stood
    then (:meth:`runner.engine.core.Engine.send_armed`): its ``place`` only reads the reply, from the
    adapter (a halt since must not turn a sent order into a refused one). Everything else: ``guarded``."""

    def __init__(self, guarded: Broker, adapter: Any, client_order_id: str) -> None:
        self._guarded = guarded
        self._adapter = adapter
        self._cid: str | None = client_order_id

    async def place(self, request: OrderRequest) -> Order:
        if request.client_order_id == self._cid:
            self._cid = None
            order: Order = await self._adapter.place(request)
            return order
        return await self._guarded.place(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._guarded, name)


class _YieldAfterPlace:
    """Lets the event loop run once after a request left and before its bookkeeping, so every run released
    at the same instant sends its first request before any of them journals an ack (a broker that answers
    without awaiting I/O, like paper, would otherwise serialize the burst behind each run's commits)."""

    def __init__(self, inner: Broker, sent: Callable[[], None]) -> None:
        self._inner = inner
        self._sent = sent

    async def place(self, request: OrderRequest) -> Order:
        try:
            order = await self._inner.place(request)
        except asyncio.CancelledError:
            self._sent()
            raise
        except BaseException:
            await self._after()
            raise
        await self._after()
        return order

    async def _after(self) -> None:
        await asyncio.sleep(0)
        await after_send()  # the rest of the instant's burst first (an adapter may have waited already)
        self._sent()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _HeldLog:
    """A logger whose lines are held until :meth:`release` (then written in order):
    formatting and writing a log line costs more than the rest of the path from the instant to the
    request, so a staged first order's ``order_send`` line is written just after the request left."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] | None = []

    def release(self) -> None:
        held, self._held = self._held, None
        for meth, args, kw in held or ():
            meth(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        meth = getattr(self._inner, name)
        if name == "bind" or not callable(meth):
            return meth

        def hold(*args: Any, **kw: Any) -> Any:
            if self._held is None:
                return meth(*args, **kw)
            self._held.append((meth, args, kw))
            return None

        return hold
