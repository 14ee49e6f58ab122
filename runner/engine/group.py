"""A ``parallel`` group: its members run at once, as asyncio tasks of one run.

* Timing: the group honours its own ``at`` / ``after`` / ``late`` like a step; then each member its own,
  counted from the group's start (``after: 5s`` is five seconds after the group began).
* Account lease: taken once for the group, in the strongest mode a member needs (exclusive when one of
  them squares off or cancels everything), held until the last member finishes: members never take or
  drop it themselves, so no member waits for a sibling's lease (the run's row is one per run anyway).
* Failure: a failed, refused or stopped member does **not** cancel its siblings. A desk working both legs
  of a straddle wants the other leg worked to its end (a chase cut off halfway leaves an order at an
  arbitrary price); each member's outcome is journaled as it finishes, and after the group the run is
  blocked as after any failed step (only exit steps run).
* Resume: a member already finished is not run again; one that started is finished now (no timing wait),
  its orders found through the journal like any resumed step.
* Interrupt: the group is one interruptible unit (its members are cancelled together after the grace).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.engine.account_lease import drop_lease, lease_lead, take_lease
from runner.engine.steps.common import StepResult
from runner.engine.steps.dispatch import EXIT_KINDS
from runner.journal.tables import StepOutcome

if TYPE_CHECKING:
    from runner.engine.core import Engine
    from runner.journal.records import StepRecord
    from runner.playbook.models import ParallelStep


@dataclass
class GroupRun:
    """What the run loop needs back: each member's outcome (in playbook order), those not started."""

    outcomes: list[StepOutcome] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    cut_short: str | None = None


def members_of(engine: Engine, group: ParallelStep) -> list[tuple[int, Any]]:
    """(position, step) of the group's members in the run's step list."""
    ids = {m.id for m in group.steps}
    return [(i, s) for i, s in enumerate(engine.pb.steps) if s.id in ids]


async def run_group(
    engine: Engine,
    group: ParallelStep,
    done: dict[str, StepRecord],
    *,
    blocked: bool,
    previous_end: dt.datetime | None,
) -> GroupRun:
    out = GroupRun()
    todo: list[tuple[int, Any, bool]] = []  # position, step, resumed
    for position, step in members_of(engine, group):
        prior = done.get(step.id)
        if prior is not None and prior.outcome.is_final:
            continue
        if engine._stopping():
            out.not_started.append(step.id)
            continue
        if blocked and step.kind not in EXIT_KINDS:
            engine._start(step, position)
            skipped = StepResult.skipped("an earlier step failed or stopped the run")
            engine._finish(step, skipped)
            out.outcomes.append(skipped.outcome)
            continue
        todo.append((position, step, prior is not None))
    if not todo:
        return out
    resumed = any(r for _, _, r in todo)
    ran = await engine._run_unit(_members(engine, group, todo, resumed, previous_end, out))
    if ran is None:  # interrupted: in its timing wait, or cut short while trading
        if engine._trading:
            out.cut_short = group.id
        else:
            out.not_started.extend(s.id for _, s, _ in todo)
    return out


async def _members(
    engine: Engine,
    group: ParallelStep,
    todo: list[tuple[int, Any, bool]],
    resumed: bool,
    previous_end: dt.datetime | None,
    out: GroupRun,
) -> bool:
    late = None if resumed else await engine._wait_timing(group, previous_end)
    if late is not None:
        for position, step, _ in todo:
            engine._start(step, position)
            result = StepResult.skipped(f"group {group.id}: {late}")
            engine._finish(step, result)
            out.outcomes.append(result.outcome)
        return True
    lead = lease_lead([s for _, s, _ in todo])
    refused = await take_lease(engine, lead) if lead is not None else None
    engine._trading = True
    start = engine.clock.now()
    engine.log.info("group_start", group=group.id, members=[s.id for _, s, _ in todo])
    try:
        results = await asyncio.gather(
            *(_member(engine, step, position, was, start, refused) for position, step, was in todo)
        )
    finally:
        drop_lease(engine)
    out.outcomes.extend(results)
    return True


async def _member(
    engine: Engine,
    step: Any,
    position: int,
    resumed: bool,
    group_start: dt.datetime,
    refused: StepResult | None,
) -> StepOutcome:
    result: StepResult
    if refused is not None:
        engine._start(step, position)
        result = refused
    else:
        late = None if resumed else await engine._wait_timing(step, group_start)
        engine._start(step, position)
        result = StepResult.skipped(late) if late is not None else await engine._handle(step)
    engine._finish(step, result)
    return result.outcome
