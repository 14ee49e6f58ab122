"""The account lease a run's step holds (:mod:`runner.engine.leases`): taken ahead while the run is
prepared when its first step is due soon, taken when a step starts, dropped when it finishes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from runner.alerts.observe import publish_account_busy
from runner.engine.leases import AccountBusy, LeaseMode, mode_for
from runner.engine.steps.common import StepResult
from runner.journal.tables import StepOutcome

if TYPE_CHECKING:
    from runner.engine.core import Engine

# A first step due this soon after preparing takes its account lease while preparing (fires armed ahead
# of their instant keep their lateness); one due later takes it when it starts, so as not to block others.
LEASE_AHEAD = dt.timedelta(seconds=5)


def lease_lead(members: list[Any]) -> Any | None:
    """The member whose lease covers them all: an exclusive one if any, else any that needs one."""
    needing = [s for s in members if mode_for(s) is not None]
    exclusive = [s for s in needing if mode_for(s) is LeaseMode.EXCLUSIVE]
    return (exclusive or needing or [None])[0]


async def lease_ahead(engine: Engine) -> None:
    """The first step's account lease, taken now (without waiting) when that step is due within
    LEASE_AHEAD. If the account is busy, the step waits for its lease when it starts, as usual."""
    if not engine.pb.steps:
        return
    step: Any = engine.pb.steps[0]
    # A group's first member: the group's timing applies, and the lease covering all its members.
    group = engine.pb.group_of(step.id)
    timed = group or step
    if group is not None:
        step = lease_lead(list(group.steps))
    if step is None or mode_for(step) is None or timed.after is not None:
        return
    if engine.record is not None:
        prior = (await engine._db(engine.journal.steps_of, engine.run_id)).get(step.id)
        if prior is not None and prior.outcome.is_final:
            return
    now = engine.clock.now()
    if (
        timed.at is not None
        and not engine.options.ignore_at
        and engine.ctx.local_instant(timed.at) - now > LEASE_AHEAD
    ):
        return
    await take_lease(engine, step, wait=0)


async def take_lease(engine: Engine, step: Any, *, wait: float | None = None) -> StepResult | None:
    """The account lease ``step`` needs (:mod:`runner.engine.leases`), held until the step finishes; a
    REFUSED result naming the holder when the account stays busy for ``wait`` (default busy_wait)."""
    mode = mode_for(step)
    held = engine._lease
    if mode is None or (held is not None and held.step_id == step.id and held.mode is mode):
        return None
    drop_lease(engine)
    try:
        engine._lease = await engine.leases.acquire(
            engine.account,
            engine.run_id,
            mode,
            step.id,
            clock=engine.clock,
            wait=engine.ctx.busy_wait if wait is None else wait,
            off_loop=engine.options.journal_off_loop,
        )
    except AccountBusy as exc:
        engine.log.warning("account_busy", step=step.id, error=str(exc))
        publish_account_busy(engine.pb, engine.account, engine.run_id, step.id, str(exc))
        return StepResult(StepOutcome.REFUSED, f"{exc}; nothing sent")
    return None


def drop_lease(engine: Engine) -> None:
    lease, engine._lease = engine._lease, None
    if lease is not None:
        engine.leases.release(lease)
