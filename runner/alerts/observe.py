"""Engine events -> alerts: an observer wrapped around the run's own (the terminal's, or none).

The engine calls :func:`alert_observer` once per run; without an installed dispatcher it returns the
observer it was given, so a run without alerts pays nothing per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.alerts import publish as _pub
from runner.alerts.events import Alert, AlertEvent
from runner.engine.events import EngineEvent, EventKind, Observer
from runner.model import OrderStatus

if TYPE_CHECKING:
    from runner.playbook.models import Playbook


def alert_observer(pb: Playbook, account: str, run_id: str, inner: Observer | None) -> Observer | None:
    if _pub.installed() is None:
        return inner
    owner = getattr(pb, "owner", None)

    def alert(event: AlertEvent, what: str, step: str | None, key: str | None = None) -> None:
        _pub.publish(
            Alert(event, what, playbook=pb.name, account=account, step=step, run_id=run_id,
                  owner=owner, key=key)
        )  # fmt: skip

    def observe(ev: EngineEvent) -> None:
        if inner is not None:
            inner(ev)
        if ev.kind is EventKind.STEP_FINISHED and ev.outcome == "failed":
            alert(AlertEvent.STEP_FAILED, f"step {ev.step_id} failed: {ev.message}", ev.step_id)
        elif ev.kind is EventKind.ORDER and ev.order is not None and ev.order.status is OrderStatus.REJECTED:
            o = ev.order
            what = f"order {o.client_order_id} rejected: {o.reject_reason or 'no reason given'}"
            alert(AlertEvent.ORDER_REJECTED, what, ev.step_id, key=f"rejected|{o.client_order_id}")
        elif ev.kind is EventKind.RUN_FINISHED and ev.outcome == "interrupted":
            alert(AlertEvent.RUN_INTERRUPTED, f"run {run_id} interrupted", None)

    return observe


def publish_account_busy(pb: Playbook, account: str, run_id: str, step: str, why: str) -> None:
    _pub.publish(
        Alert(AlertEvent.ACCOUNT_BUSY, f"step {step} refused: {why}; nothing sent", playbook=pb.name,
              account=account, step=step, run_id=run_id, owner=getattr(pb, "owner", None))
    )  # fmt: skip


def publish_dead_run_closed(account: str, dead_run: str, playbook: str | None, closer: str) -> None:
    _pub.publish(
        Alert(AlertEvent.RUN_CLOSED_DEAD,
              f"run {dead_run} was left running by a process that died; closed as interrupted by {closer}",
              playbook=playbook, account=account, run_id=dead_run, key=f"dead|{dead_run}")
    )  # fmt: skip
