"""``runner apply``: execute a saved plan, refusing when the account or the playbook drifted.

Apply re-reads the live state and compares its fingerprint with the plan's. When they match, the plan's
playbook runs through the ordinary engine under the plan's run id (so every client id is the one the
plan shows; journaled, intent before request), with the broker wrapped in :class:`PlanGuard`: a write the
plan does not contain is rejected before it leaves. Given a kill-switch-guarded broker (as ``runner apply``
does), the switch still has the last word: a halt refuses the plan's orders too. Steps decide at runtime
only what the plan marks as conditional (fills, timeouts, chase prices); anything else would be a drift
and is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from runner.brokers.base import Broker, ForwardingBroker
from runner.clock import Clock
from runner.engine.calls import Tuning
from runner.engine.core import RunOptions, RunReport, execute
from runner.engine.events import Observer
from runner.engine.interrupt import Interrupt
from runner.engine.killswitch import GuardedBroker
from runner.engine.risk import RiskConfig
from runner.errors import Rejected
from runner.journal.store import Journal
from runner.model import Modification, MultilegRequest, Order, OrderRequest
from runner.plan.model import CallOp, Plan, PlannedCall
from runner.plan.state import drift, observe
from runner.playbook.models import Playbook


class PlanDrifted(Exception):
    """The live state (or the playbook) is not what the plan was made from. Nothing was sent."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _mismatch(request: OrderRequest, call: PlannedCall) -> str | None:
    """Why a request is not the planned call (``None`` when it is)."""
    checks: list[tuple[str, object, object]] = [
        ("instrument", request.instrument.key, call.instrument),
        ("side", request.side, call.side),
        ("product", request.product.value, call.product),
    ]
    if not call.runtime_price:
        checks += [
            ("order type", request.order_type, call.order_type),
            ("price", request.price, call.price),
            ("trigger price", request.trigger_price, call.trigger_price),
        ]
    for name, got, want in checks:
        if got != want:
            return f"{name} {got} differs from the planned {want}"
    if request.quantity > call.quantity:
        return f"quantity {request.quantity} exceeds the planned {call.quantity}"
    return None


class PlanGuard(ForwardingBroker):
    """A broker that lets through reads, and only the writes a plan contains."""

    def __init__(self, inner: Broker, plan: Plan) -> None:
        super().__init__(inner)
        calls = [c for c in plan.calls if not c.refused]
        self.places = {c.client_order_id: c for c in calls if c.op in (CallOp.PLACE, CallOp.PLACE_MULTILEG)}
        self.cancels = {c.client_order_id for c in calls if c.op is CallOp.CANCEL}
        self.cancels |= {c.broker_order_id for c in calls if c.op is CallOp.CANCEL and c.broker_order_id}
        self.modifies = {c.client_order_id for c in calls if c.op is CallOp.MODIFY}

    def _check_place(self, request: OrderRequest) -> None:
        call = self.places.get(request.client_order_id)
        if call is None:
            raise Rejected(f"not in the plan: place {request.client_order_id}", broker="plan")
        why = _mismatch(request, call)
        if why is not None:
            raise Rejected(f"not as planned: {request.client_order_id}: {why}", broker="plan")

    def _check_cancel(self, order: Order) -> None:
        ids = {order.client_order_id, order.broker_order_id} - {None}
        if not ids & (self.cancels | self.places.keys()):
            raise Rejected(f"not in the plan: cancel {order.client_order_id}", broker="plan")

    async def place(self, request: OrderRequest) -> Order:
        self._check_place(request)
        return await self.inner.place(request)

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        for leg in request.legs:
            self._check_place(leg)
        return await super().place_multileg(request)

    async def cancel(self, order: Order) -> Order:
        self._check_cancel(order)
        return await self.inner.cancel(order)

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        for leg in legs:
            self._check_cancel(leg)
        return await super().cancel_multileg(legs)

    async def modify(self, order: Order, change: Modification) -> Order:
        if order.client_order_id not in self.modifies:
            raise Rejected(f"not in the plan: modify {order.client_order_id}", broker="plan")
        return await self.inner.modify(order, change)


def playbook_drift(plan: Plan, content: str) -> list[str]:
    """A unified diff of the planned playbook against its current content (empty when unchanged)."""
    import difflib

    if dataclasses.replace(plan.source, content=content).sha256 == plan.source.sha256:
        return []
    diff = difflib.unified_diff(
        plan.source.content.splitlines(),
        content.splitlines(),
        f"{plan.source.path} (planned)",
        f"{plan.source.path} (now)",
        lineterm="",
    )
    return ["playbook changed since the plan:", *diff]


async def apply_plan(
    plan: Plan,
    pb: Playbook,
    broker: Broker,
    journal: Journal,
    clock: Clock,
    *,
    risk: RiskConfig | None = None,
    tuning: Tuning | None = None,
    observer: Observer | None = None,
    interrupt: Interrupt | None = None,
    busy_wait: float | None = None,  # ``--busy-wait``; None: the playbook's account_busy.wait
) -> RunReport:
    """Refuse (:class:`PlanDrifted`, nothing sent) unless the live state matches the plan, then run it."""
    if pb.name != plan.playbook:
        raise PlanDrifted([f"playbook is {pb.name!r}, the plan is for {plan.playbook!r}"])
    await broker.connect()
    live = await observe(broker, journal, plan.run_id)
    if live.snapshot.fingerprint != plan.state.fingerprint:
        raise PlanDrifted(["live state drifted since the plan:", *drift(plan.state, live.snapshot)])
    options = RunOptions(
        scheduled_for=plan.scheduled_for,
        mode="apply",
        ignore_at=plan.ignore_at,
        risk=risk,
        tuning=tuning or Tuning(),
        interrupt=interrupt,
        busy_wait=busy_wait,
        run_id=plan.run_id,  # the plan's run, never re-derived
    )
    return await execute(
        pb, _guarded(broker, plan), journal, clock, account=plan.account, options=options, observer=observer
    )


def _guarded(broker: Broker, plan: Plan) -> Broker:
    """The plan's guard on ``broker``. Behind the kill switch (``runner.commands.session.kill_switch``) the
    switch stays outermost, so the engine sees it and reports its refusals as REFUSED steps (exit 4)."""
    if isinstance(broker, GuardedBroker):
        return GuardedBroker(PlanGuard(broker.inner, plan), broker.view)
    return PlanGuard(broker, plan)
