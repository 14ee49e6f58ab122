"""The halt cancel pass: every open order on every account cancelled and verified by reading back.

Run by the daemon when the kill switch goes to HALT (for every account its playbooks name) and by
``runner halt --cancel-now``. Each account gets a journal run of its own (playbook ``halt``, mode
``halt``): the calls go through a :class:`runner.engine.gateway.Gateway`, so they are retried, journaled in
``broker_calls`` and the orders' new states recorded. A cancel ack is not a cancel: each order is read back
until it is no longer live, and a last ``open_orders`` read counts what is still open. The result per
account lands in ``halt_passes`` (see :class:`runner.engine.killswitch.HaltPass`) for ``runner status``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping

from runner.brokers.base import Broker
from runner.clock import Clock
from runner.engine.calls import Tuning
from runner.engine.gateway import Gateway
from runner.engine.killswitch import ControlStore, HaltPass
from runner.ids import run_id as make_run_id
from runner.journal.store import Journal
from runner.journal.tables import RunStatus, StepOutcome
from runner.model import Order, OrderStatus

log = logging.getLogger("runner.halt")
PLAYBOOK = "halt"  # the journal's name for these runs (`runner history --playbook halt`)
STEP = "cancel_open"


async def cancel_pass(
    brokers: Mapping[str, Broker],
    journal: Journal,
    clock: Clock,
    store: ControlStore,
    *,
    by: str | None = None,
    errors: Mapping[str, str] | None = None,
    tuning: Tuning | None = None,
    since: dt.datetime | None = None,
) -> list[HaltPass]:
    """Cancel every open order on each of ``brokers`` (accounts in parallel). ``errors``: accounts whose
    broker could not even be built, recorded as failed passes. ``since``: the halt (``control.since``)
    this pass answers, recorded with each result. Returns one result per account."""
    tuning = tuning or Tuning()
    results = [
        dataclasses.replace(r, halt_since=since)
        for r in await asyncio.gather(
            *(_one(name, broker, journal, clock, tuning, by) for name, broker in sorted(brokers.items()))
        )
    ]
    now = clock.now()
    failed = sorted((errors or {}).items())
    results += [HaltPass(name, now, by=by, error=why, halt_since=since) for name, why in failed]
    for r in results:
        store.record_pass(r)
        level = logging.WARNING if r.clean else logging.ERROR
        log.log(level, "halt cancel pass: %s", r.line())
    return sorted(results, key=lambda r: r.account)


async def _one(
    account: str, broker: Broker, journal: Journal, clock: Clock, tuning: Tuning, by: str | None
) -> HaltPass:
    started = clock.now()
    rid = make_run_id(f"{PLAYBOOK}:{account}", started)
    journal.start_run(
        rid, playbook=PLAYBOOK, account=account, scheduled_for=started, mode="halt", now=started
    )
    journal.start_step(rid, STEP, position=0, kind="cancel", now=started)
    gw = Gateway(
        broker=broker, journal=journal, clock=clock, run_id=rid, account=account, tuning=tuning
    ).for_step(STEP)
    opens: list[Order] = []
    cancelled = 0
    error: str | None = None
    left = -1
    try:
        await broker.connect()
        opens = list(await gw.open_orders())
        done = await asyncio.gather(*(gw.cancel(o) for o in opens), return_exceptions=True)
        for order, got in zip(opens, done, strict=True):
            if isinstance(got, BaseException):
                gw.note(f"cancel {order.client_order_id}: {type(got).__name__}: {got}", level="error")
            elif got.status is OrderStatus.CANCELLED:
                cancelled += 1
        still = await gw.open_orders()  # the proof: what the broker still works after the pass
        left = len(still)
        for o in still:
            gw.note(
                f"still open after the halt cancel pass: {o.status.value}",
                level="error",
                cid=o.client_order_id,
            )
    except Exception as exc:  # one account's failure must not stop the others' cancels
        error = f"{type(exc).__name__}: {exc}"
        gw.note(f"halt cancel pass failed: {error}", level="error")
    result = HaltPass(
        account,
        clock.now(),
        open_before=len(opens),
        cancelled=cancelled,
        still_open=left if left >= 0 else len(opens) - cancelled,  # no read-back: assume the worst
        run_id=rid,
        by=by,
        error=error,
    )
    ok = result.clean
    outcome = StepOutcome.SUCCEEDED if ok else StepOutcome.FAILED
    journal.finish_step(rid, STEP, outcome, clock.now(), result.line())
    journal.finish_run(rid, RunStatus.SUCCEEDED if ok else RunStatus.FAILED, clock.now(), result.line())
    return result
