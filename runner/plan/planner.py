"""``runner plan``: the exact broker calls a run would make, computed from the account's live state
without sending anything.

The planner reads open orders and positions (and, for a run already under way, the journal) and walks
the playbook's steps with the same pure functions the step handlers use (request building, cancel
filters, square-off selection and slicing, chase prices, risk checks), so a plan cannot disagree with a
run about what a step selects. Each call is either *definite* (sent as soon as its step runs, given the
observed state) or carries the runtime ``condition`` it depends on (a fill, a timeout, a price).

The plan's model and the observed state live in :mod:`runner.plan.model` and :mod:`runner.plan.state`,
the projected state the steps are planned over in :mod:`runner.plan.projection`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.base import Broker
from runner.engine.core import late_reason
from runner.engine.gateway import is_live
from runner.engine.risk import RiskChecker, RiskConfig, RiskRefused
from runner.engine.rolling import (
    InstrumentUnresolved,
    allow_contracts,
    dependencies,
    master_of,
    resolve_spec,
    rolling_aliases,
    step_aliases,
    with_contracts,
)
from runner.engine.steps.cancel import open_matching
from runner.engine.steps.common import StepError, StepRefused, enrich
from runner.engine.steps.dispatch import EXIT_KINDS
from runner.engine.steps.modify import (
    chase_cap,
    chase_step,
    journaled_resolutions,
    modification_of,
    next_chase_price,
    relative_fields,
    resolve_fields,
)
from runner.engine.steps.spread import UNWIND_LEG, leg_sequence, native_for, unwind_request
from runner.engine.steps.square_off import (
    ROUND,
    exit_requests,
    exit_tag,
    left_alone,
    next_round,
    position_key,
    positions_to_close,
    run_net,
    scope_intents,
    scope_label,
    scope_since,
    slot_of,
)
from runner.ids import client_order_id, run_id_in
from runner.journal.resolved import ResolvedInstruments
from runner.journal.store import Journal
from runner.journal.tables import Purpose, StepOutcome
from runner.model import Modification, Order, OrderStatus, OrderType
from runner.plan.groups import label_of
from runner.plan.model import CallOp, Plan, PlaybookSource, StepPlan, Verdict
from runner.plan.projection import Projection, _call, _Draft, _Slot
from runner.plan.state import observe, order_key
from runner.playbook.models import (
    CancelStep,
    ModifyStep,
    NoPrice,
    OrderCondition,
    OrderFilter,
    PlaceStep,
    Playbook,
    SpreadStep,
    SquareOffStep,
    WaitStep,
    parse_duration,
    parse_time,
)


def when_text(cond: OrderCondition | None) -> str:
    if cond is None:
        return "always"
    parts = []
    if cond.status is not None:
        parts.append("status " + "/".join(s.value for s in cond.status))
    if cond.unfilled:
        parts.append("nothing filled")
    if cond.older_than is not None:
        parts.append(f"older than {cond.older_than}")
    return " and ".join(parts) or "always"


def timing_text(step: Any, *, member: bool = False) -> str:
    """``member``: a ``parallel`` group's member, whose ``after`` counts from the group's start."""
    parts = []
    if step.at is not None:
        parts.append(f"at {step.at}" + (f" (late: {step.late})" if step.late else ""))
    if step.after is not None:
        parts.append(f"{step.after} after the {'group starts' if member else 'previous step'}")
    return ", ".join(parts) or ("when the group starts" if member else "right after the previous step")


class Planner(Projection):
    """Walks the steps once over a projected copy of the observed state. Reads only."""

    _rolling_loaded = False  # the run's journaled contracts applied (see _resolve_rolling)

    # --- steps ----------------------------------------------------------------------------------------

    async def plan_steps(self) -> list[StepPlan]:
        done = self.journal.steps_of(self.run_id)
        blocked = any(
            r.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED) for r in done.values()
        )
        handlers: dict[str, Callable[[_Draft, Any], Awaitable[None]]] = {
            "place": self._place_step,
            "spread": self._spread,
            "modify": self._modify_step,
            "cancel": self._cancel,
            "square_off": self._square_off,
            "wait": self._wait,
        }
        clock = self.now
        out = []
        for step in self.pb.steps:
            timing = timing_text(step, member=self.pb.group_of(step.id) is not None)
            prior = done.get(step.id)
            if prior is not None and prior.outcome.is_final:
                out.append(
                    StepPlan(
                        step.id, step.kind, Verdict.DONE, f"already {prior.outcome.value} in this run", timing
                    )
                )
                continue
            if blocked and step.kind not in EXIT_KINDS:
                why = "an earlier step fails or is refused"
                out.append(StepPlan(step.id, step.kind, Verdict.SKIPPED, why, timing))
                continue
            if step.at is not None and not self.ignore_at and prior is None:
                target = dt.datetime.combine(self.run_date, parse_time(step.at), tzinfo=self.tz)
                late = late_reason(self.pb, step, target, clock)
                if late is not None:
                    out.append(StepPlan(step.id, step.kind, Verdict.SKIPPED, late + " (if run now)", timing))
                    continue
                clock = max(clock, target)
            if step.after is not None:
                clock += parse_duration(step.after)
            d = _Draft()
            try:
                contracts = await self._resolve_rolling(step)  # rolling instruments, as a run would now
                await handlers[step.kind](d, step)
                if contracts:
                    d.message = "; ".join([d.message, *contracts]) if d.message else "; ".join(contracts)
            except RiskRefused as exc:
                d.verdict, d.message = Verdict.REFUSED, f"refused by pre-trade limits: {exc}"
            except StepRefused as exc:  # a safety check, as a run would refuse it
                d.verdict, d.message = Verdict.REFUSED, str(exc)
            except StepError as exc:
                d.verdict, d.message = Verdict.FAILS, str(exc)
            if d.verdict in (Verdict.REFUSED, Verdict.FAILS):
                blocked = True
            out.append(StepPlan(step.id, step.kind, d.verdict, d.message, timing, tuple(d.calls)))
        return [dataclasses.replace(s, group=label_of(self.pb, s.step_id)) for s in out]

    async def _resolve_rolling(self, step: Any) -> list[str]:
        """Make the rolling aliases ``step`` uses concrete in ``self.pb`` (journaled contracts of a run under
        way first, else the broker's master and LTP now, :mod:`runner.engine.rolling`); one line per
        contract resolved here: the contract with its rule beside it. Nothing is journaled."""
        pending = rolling_aliases(self.pb)
        if not pending:
            return []
        if not self._rolling_loaded:
            self._rolling_loaded = True
            journaled = ResolvedInstruments(self.journal.engine).of_run(self.run_id)
            contracts = {a: r.instrument for a, r in journaled.items() if a in pending}
            allow_contracts(self.risk, self.pb, contracts)
            self.pb = with_contracts(self.pb, contracts)
            pending = rolling_aliases(self.pb)
        needed = [a for a in dependencies(self.pb, step_aliases(step)) if a in pending]
        if not needed:
            return []
        master = await master_of(self.broker)
        if master is None:
            raise InstrumentUnresolved(
                f"instrument '{needed[0]}' is rolling, but the account's broker has no instrument master"
            )
        lines = []
        for alias in needed:
            rule = self.pb.instruments[alias].rule()
            ins, underlying, ltp = await resolve_spec(self.pb, alias, master, self._ltp, self.run_date)
            # (self._ltp caches per instrument: one ATM per underlying per plan, as in a run)
            allow_contracts(self.risk, self.pb, {alias: ins})
            self.pb = with_contracts(self.pb, {alias: ins})
            at = f", {underlying.key} LTP {ltp}" if underlying is not None else ""
            lines.append(f"{alias} = {ins.key} (rolling: {rule}{at}, resolved at plan time)")
        return lines

    async def _place_step(self, d: _Draft, step: PlaceStep) -> None:
        req, kw = await self._request(step, step.id, 0)
        await self._place(d, req, _Slot(step.id, 0, 0, Purpose.ENTRY), **kw)
        d.message = f"{req.side.value} {req.quantity} {req.instrument.key} {req.order_type.value}"

    async def _spread(self, d: _Draft, step: SpreadStep) -> None:
        native = native_for(self.broker, step)
        built = [await self._request(leg, step.id, i + 1) for i, leg in enumerate(step.legs)]
        reqs = [r for r, _ in built]
        if native:
            group = client_order_id(self.run_id, step.id, 0, 0)
            fresh = all(
                self.journal.get_intent(client_order_id(self.run_id, step.id, i + 1, 0)) is None
                for i in range(len(reqs))
            )
            count = self.entries
            if fresh:  # the gateway checks every leg before journaling any: all or nothing
                for i, r in enumerate(reqs):
                    cid = client_order_id(self.run_id, step.id, i + 1, 0)
                    try:
                        await self._check(dataclasses.replace(r, client_order_id=cid), Purpose.ENTRY, count)
                    except RiskRefused as exc:
                        d.calls.append(
                            _call(
                                CallOp.PLACE_MULTILEG,
                                r,
                                cid=cid,
                                group_id=group,
                                risk=f"refused: {exc}",
                                refused=True,
                            )
                        )
                        raise
            for i, r in enumerate(reqs):
                cid = client_order_id(self.run_id, step.id, i + 1, 0)
                req = dataclasses.replace(r, client_order_id=cid)
                risk = "ok" if fresh else "journaled earlier: looked up by client id"
                d.calls.append(
                    _call(
                        CallOp.PLACE_MULTILEG,
                        req,
                        purpose=Purpose.ENTRY,
                        group_id=group,
                        risk=risk,
                        **built[i][1],
                    )
                )
                self._project(req, _Slot(step.id, i + 1, 0, Purpose.ENTRY))
            if fresh:
                self.entries += len(reqs)
            d.message = f"native {len(reqs)}-leg order (group {group})"
        else:
            prev: str | None = None
            for i in leg_sequence(step):
                name = step.legs[i].id or f"leg {i + 1}"
                cond = None if prev is None else f"after {prev} fills within {step.leg_timeout}"
                await self._place(
                    d, reqs[i], _Slot(step.id, i + 1, 0, Purpose.ENTRY), condition=cond, **built[i][1]
                )
                prev = name
            d.message = f"legged, {step.leg_order}, {step.leg_timeout} per leg"
        failure = f"if a leg is not filled within {step.leg_timeout}"
        d.message += f"; on leg failure: {step.on_leg_failure}"
        if step.on_leg_failure == "keep":
            return
        for i, r in enumerate(reqs):
            cid = client_order_id(self.run_id, step.id, i + 1, 0)
            d.calls.append(
                _call(CallOp.CANCEL, r, cid=cid, condition=f"{failure}: cancel legs still working")
            )
        if step.on_leg_failure == "unwind":
            for i, r in enumerate(reqs):
                u = unwind_request(self.pb, step.legs[i], r, r.quantity)
                slot = _Slot(step.id, UNWIND_LEG + i + 1, 0, Purpose.UNWIND)
                await self._place(
                    d,
                    u,
                    slot,
                    condition=f"{failure}: close what this leg filled (up to {r.quantity})",
                    project=False,
                )

    async def _modify_step(self, d: _Draft, step: ModifyStep) -> None:
        found = await self._targets(step.order)
        if not found:
            d.verdict, d.message = Verdict.SKIPPED, f"order {step.order!r} is never placed"
            return
        if len(found) != 1:
            raise StepError(f"{step.order!r} names {len(found)} orders; modify one leg as spread_id.leg_id")
        order, _ = found[0]
        cond = f"if {when_text(step.when)}"
        if self._filled_in_projection(order):
            cond += " (not if it filled first)"
        resolved, notes = await self._resolve_modify(step, order)
        if step.chase is None:
            change = modification_of(self.pb, step, resolved)
            self._modify(d, order, change, cond, "modify")
            note = "; ".join(notes.values())
            if note:
                d.calls[-1] = dataclasses.replace(d.calls[-1], runtime_price=True, price_note=note)
            d.message = f"conditional change of {order.client_order_id}" + (f" to {note}" if note else "")
            return
        spec = step.chase
        if order.price is None:
            raise StepError("chase needs a LIMIT order with a price")
        cap = chase_cap(self.pb, spec, resolved)
        origin = self._origin_price(order)
        price = order.price
        every = parse_duration(spec.every)
        step_size = chase_step(spec, order.instrument.tick_size)
        for k in range(int(abs(price - origin) / step_size), spec.max):
            nxt = next_chase_price(price, order.side, spec, order.instrument.tick_size, cap)
            if nxt == price:
                break  # at the limit price: the chase keeps waiting there
            wait = _fmt(every * (k + 1))
            order = self._modify(
                d, order, Modification(price=nxt), f"{cond}, still working {wait} in", f"chase {k + 1}"
            )
            price = nxt
        if spec.then_market:
            self._modify(
                d,
                order,
                Modification(order_type=OrderType.MARKET),
                f"{cond}, still working after the chase",
                "to market",
            )
        limit = notes.get("limit_price", cap)
        by = f"{spec.ticks} ticks ({step_size})" if spec.ticks is not None else f"{spec.tick}"
        d.message = f"chase {order.side.value} {origin} by {by} every {spec.every}, limit {limit}"

    async def _resolve_modify(
        self, step: ModifyStep, order: Order
    ) -> tuple[dict[str, Decimal], dict[str, str]]:
        """A modify step's LTP-relative prices: as journaled by an earlier start, else estimated now."""
        fields = relative_fields(step)
        if not fields:
            return {}, {}
        earlier = journaled_resolutions(self.journal, self.run_id, step.id)
        if set(fields) <= set(earlier):
            return earlier, {}
        resolved = resolve_fields(self.pb, step, order, await self._ltp(enrich(self.pb, order.instrument)))
        prefix = {"price": "", "trigger_price": "trg ", "limit_price": ""}
        notes = {
            name: f"{prefix[name]}{value.offset.label} (≈ {resolved[name]} now)"
            for name, (value, _) in fields.items()
        }
        return resolved, notes

    def _origin_price(self, order: Order) -> Decimal:
        s = self.slots.get(order.client_order_id)
        if s is not None:
            first = [i for i in self.intents if i.slot == s.slot and i.leg == s.leg and i.attempt == 0]
            if first and first[0].request.price is not None:
                return first[0].request.price
        assert order.price is not None
        return self.planned.get(order.client_order_id, order).price or order.price

    async def _cancel(self, d: _Draft, step: CancelStep) -> None:
        if step.order is not None:
            found = await self._targets(step.order)
            if not found:
                d.verdict, d.message = Verdict.SKIPPED, f"order {step.order!r} is never placed"
                return
            for order, at_broker in found:
                definite = at_broker and step.when is None and order_key(order) in self.observed_open
                if not at_broker or is_live(order):
                    cond = None if definite else f"if still live and {when_text(step.when)}"
                    d.calls.append(_call(CallOp.CANCEL, order, condition=cond, reason=f"order {step.order}"))
                if step.when is None or step.when.status is None or OrderStatus.OPEN in step.when.status:
                    self.open.pop(order_key(order), None)
            d.message = f"cancel {step.order} ({when_text(step.when)})"
            return
        assert step.all_open is not None
        d.message = self._cancel_matching(d, step.all_open, by_side=True, reason="matches all_open")
        if not d.calls:
            d.verdict = Verdict.NOTHING

    def _cancel_matching(
        self, d: _Draft, f: OrderFilter, *, by_side: bool, reason: str, only: set[str] | None = None
    ) -> str:
        """Cancels of the live orders ``f`` matches now, and of this run's orders if they are still open
        then; ``only``: among these client ids (a scoped square-off's). Returns a summary."""
        ours = self.ours | set(self.planned) if f.this_run_only else None
        live = [o for o in self.open.values() if only is None or o.client_order_id in only]
        now_open = open_matching(self.pb, f, live, ours, by_side=by_side)
        for o in now_open:
            cond = None if order_key(o) in self.observed_open else "if still open (placed by this run)"
            call = _call(CallOp.CANCEL, o, broker_order_id=o.broker_order_id, condition=cond, reason=reason)
            d.calls.append(call)
            self.open.pop(order_key(o))
        later = [
            o for cid, o in self.planned.items() if cid not in self.open and (only is None or cid in only)
        ]
        maybe = open_matching(self.pb, f, later, ours, by_side=by_side)
        for o in maybe:
            cond = "if not filled by then (placed by this run)"
            d.calls.append(_call(CallOp.CANCEL, o, condition=cond, reason=reason))
        text = f"cancel {len(now_open)} open order(s)" if now_open else "no open orders match"
        return text + (f" (+{len(maybe)} of this run's if still open)" if maybe else "")

    async def _square_off(self, d: _Draft, step: SquareOffStep) -> None:
        own = [i for i in self.intents if i.step_id == step.id]
        notes = []
        for i in own:
            o = self.open.pop(i.client_order_id, None)
            if o is not None:
                d.calls.append(_call(CallOp.CANCEL, o, reason="own earlier square-off order (resumed step)"))
        scoped = scope_intents(self.journal, self.account, self.pb, step, scope_since(self.run_date, self.tz))
        tag = exit_tag(step)
        mine = [r for r in self.planned.values() if tag is None or r.tag == tag]  # this plan's, in scope
        if step.cancel_open_orders:
            only = (
                None
                if scoped is None
                else {i.client_order_id for i in scoped} | {o.client_order_id for o in mine}
            )
            reason = "open order matching the filter" + (
                "" if scoped is None else f" of {scope_label(step, self.pb)}"
            )
            notes.append(self._cancel_matching(d, step.filter, by_side=False, reason=reason, only=only))
        caps: dict[str, int] | None = None
        if step.filter.this_run_only:
            caps = dict(self.own)
        elif scoped is not None:  # journaled fills of the scope, plus this plan's projected fills in it
            caps = run_net(scoped)
            for r in self.filled:
                if tag is None or r.tag == tag:
                    key = f"{r.instrument.key}|{r.product.value}"
                    caps[key] = caps.get(key, 0) + r.quantity * r.side.sign
        positions = list(self.positions.values())
        targets = positions_to_close(self.pb, step, positions, caps)
        notes += left_alone(self.pb, step, positions, caps)  # what it will not touch, and why
        slices = 0
        unpriced: list[str] = []
        if step.escalation is not None:  # the policy is part of the plan, priced or not
            notes.append(f"limit first; with no fresh price reference: {step.escalation.no_price.value}")
        for pos in targets:
            ins = enrich(self.pb, pos.instrument)
            ref = await self._ref(ins) if step.escalation is not None else None
            if step.escalation is not None and ref is None:
                if step.escalation.no_price is NoPrice.FAIL:
                    unpriced.append(f"{ins.key} {pos.product.value} {pos.quantity:+d}")
                    continue
                notes.append(f"{ins.key}: no price reference, closing at market (no_price: market)")
            key = position_key(pos)
            seen = self.observed_positions.get(key, 0)
            cond = (
                None
                if self.positions[key].quantity == seen
                else f"sized assuming this run's orders fill (observed now: {seen})"
            )
            rnd = next_round(own, slot_of(step, pos))
            for n, req in enumerate(exit_requests(step, pos, ins, ref)):
                slot = _Slot(slot_of(step, pos), rnd * ROUND + n, 0, Purpose.SQUARE_OFF)
                await self._place(
                    d,
                    req,
                    slot,
                    condition=cond,
                    runtime_price=req.order_type is OrderType.LIMIT,
                    reason=f"close {pos.quantity} {pos.product.value}",
                )
                slices += 1
                esc = step.escalation
                if esc is not None and esc.then_market and req.order_type is OrderType.LIMIT:
                    self._modify(
                        d,
                        self.planned[d.calls[-1].client_order_id],
                        Modification(order_type=OrderType.MARKET),
                        f"if still working after {esc.timeout}",
                        "escalate",
                    )
        notes.append(
            f"close {len(targets)} position(s) with {slices} order(s)" if targets else "nothing to square off"
        )
        if unpriced:
            notes.append(
                f"NOT FLAT: no price reference for {', '.join(unpriced)}: not closed (no_price: fail)"
            )
        d.message = "; ".join(notes)
        if unpriced:
            d.verdict = Verdict.FAILS
        elif not d.calls:
            d.verdict = Verdict.NOTHING

    async def _wait(self, d: _Draft, step: WaitStep) -> None:
        parts = []
        if step.until is not None:
            parts.append(f"until {step.until}")
        if step.order is not None:
            if not await self._targets(step.order):
                raise StepError(f"order {step.order!r} is never placed")
            statuses = "/".join(s.value for s in (step.status or [OrderStatus.FILLED]))
            parts.append(
                f"up to {step.timeout} for {step.order} to be {statuses} (on timeout: {step.on_timeout})"
            )
        d.message = "waits " + ", then ".join(parts) if parts else "nothing to wait for"


def _fmt(td: dt.timedelta) -> str:
    s = int(td.total_seconds())
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


async def make_plan(
    pb: Playbook,
    source: PlaybookSource,
    broker: Broker,
    journal: Journal,
    *,
    account: str,
    now: dt.datetime,
    scheduled_for: dt.datetime,
    ignore_at: bool = False,
    risk: RiskConfig | None = None,
    run_key: str | None = None,
    accounts_file: str | None = None,
    db: str | None = None,
) -> Plan:
    """Connect, read the state, plan every step. Sends nothing and writes nothing to the journal."""
    run_id = run_id_in(journal.has_run, run_key or pb.name, scheduled_for, ZoneInfo(pb.timezone))
    await broker.connect()
    observed = await observe(broker, journal, run_id)
    planner = Planner(
        pb,
        broker,
        journal,
        observed,
        run_id=run_id,
        now=now,
        run_date=scheduled_for.astimezone(ZoneInfo(pb.timezone)).date(),
        ignore_at=ignore_at,
        risk=RiskChecker(pb, risk),
        account=account,
    )
    steps = await planner.plan_steps()
    positions, orders = planner.projection()
    return Plan(
        playbook=pb.name,
        source=source,
        account=account,
        broker=broker.name,
        run_id=run_id,
        scheduled_for=scheduled_for,
        ignore_at=ignore_at,
        created_at=now,
        state=observed.snapshot,
        steps=tuple(steps),
        positions=tuple(positions),
        orders=tuple(orders),
        accounts_file=accounts_file,
        db=db,
    )


__all__ = ["Planner", "make_plan"]
