"""``wait``: until a local time, or until an earlier order reaches a status, with a timeout."""

from __future__ import annotations

from runner.engine.steps.common import RunContext, StepResult, current_orders, describe, wait_all
from runner.journal.tables import StepOutcome
from runner.model import OrderStatus
from runner.playbook.models import WaitStep


async def run(ctx: RunContext, step: WaitStep) -> StepResult:
    if step.until is not None:
        await ctx.clock.sleep_until(ctx.local_instant(step.until))
        if step.order is None:
            return StepResult.ok(f"reached {step.until}")
    if step.order is None:
        return StepResult.ok("nothing to wait for")
    wanted = set(step.status or [OrderStatus.FILLED])
    found = await current_orders(ctx, step.order)
    if not found:
        return StepResult.failed(f"order {step.order!r} was never placed")
    orders = [o for _, o in found]
    results = await wait_all(ctx, orders, lambda o: o.status in wanted, ctx.seconds(step.timeout))
    text = "; ".join(describe(o) for o in results)
    if all(o.status in wanted for o in results):
        return StepResult.ok(text)
    message = f"timed out after {step.timeout}: {text}"
    if step.on_timeout == "continue":
        return StepResult(StepOutcome.TIMED_OUT, message)
    if step.on_timeout == "stop":
        return StepResult(StepOutcome.STOPPED, message)
    return StepResult.failed(message)
