"""``runner plan``: the exact broker calls a run would make, computed from the account's live state
without sending anything.

The planner reads open orders and positions (and, for a run already under way, the journal) and walks
the playbook's steps with the same pure functions the step handlers use (request building, cancel
filters, square-off selection and slicing, chase prices, risk checks), so a plan cannot disagree with a
run about what a step selects. Each call is either *definite* (sent as soon as its step runs, given the
observed state) or carries the runtime ``condition`` it depends on (a fill, a timeout, a price).

The projection ("after") assumes every planned MARKET / LIMIT order fills completely; stop orders stay
resting. The plan file records a fingerprint of the observed state so ``runner apply`` can refuse when
the account drifted (see :mod:`runner.plan.apply`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.base import Broker, Capability
from runner.engine.core import late_reason
from runner.engine.gateway import Gateway, is_live
from runner.engine.risk import QuoteSource, RiskChecker, RiskConfig, RiskRefused
from runner.engine.steps.cancel import open_matching
from runner.engine.steps.common import StepError, build_request, enrich, is_relative, ref_slots
from runner.engine.steps.dispatch import EXIT_KINDS
from runner.engine.steps.modify import (
    chase_cap,
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
from runner.errors import BrokerError
from runner.ids import client_order_id
from runner.ids import run_id as make_run_id
from runner.journal.store import Journal
from runner.journal.tables import Purpose, StepOutcome
from runner.model import Modification, Order, OrderRequest, OrderStatus, OrderType, Position, Side
from runner.playbook.models import (
    CancelStep,
    LtpPrice,
    ModifyStep,
    OrderCondition,
    OrderFields,
    OrderFilter,
    PlaceStep,
    Playbook,
    SpreadStep,
    SquareOffStep,
    WaitStep,
    parse_duration,
    parse_time,
)

FORMAT = "runner-plan"
VERSION = 1
FILLS = frozenset({OrderType.MARKET, OrderType.LIMIT})  # planned orders of these types fill in the projection


class CallOp(enum.StrEnum):
    PLACE = "place"
    PLACE_MULTILEG = "place_multileg"  # one row per leg, sharing ``group_id``
    CANCEL = "cancel"
    MODIFY = "modify"


class Verdict(enum.StrEnum):
    PLANNED = "planned"
    NOTHING = "nothing"  # runs, but finds nothing to act on
    DONE = "done"  # already finished in this run (a resume skips it)
    SKIPPED = "skipped"  # late, never-placed order, or an earlier step failed / was refused
    REFUSED = "refused"  # pre-trade limits refuse an order: the run stops there
    FAILS = "fails"  # the step cannot be carried out as written


@dataclass(frozen=True, slots=True)
class PlannedCall:
    op: CallOp
    client_order_id: str
    instrument: str
    side: Side
    quantity: int
    order_type: OrderType
    product: str
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    purpose: Purpose | None = None  # places only
    broker_order_id: str | None = None  # cancels of orders we did not place
    group_id: str | None = None
    condition: str | None = None  # None: sent whenever the step runs, given the observed state
    runtime_price: bool = False  # the price is taken when the step runs (shown: the estimate now)
    price_note: str = ""  # LTP-relative prices as written, with the estimate now: "LTP -1% (≈ 123.45 now)"
    risk: str = ""  # "ok", "refused: ...", "exempt: reduces risk", ...
    refused: bool = False  # refused by limits: never sent
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("price", "trigger_price"):
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannedCall:
        return cls(
            op=CallOp(d["op"]),
            client_order_id=d["client_order_id"],
            instrument=d["instrument"],
            side=Side(d["side"]),
            quantity=int(d["quantity"]),
            order_type=OrderType(d["order_type"]),
            product=d["product"],
            price=None if d.get("price") is None else Decimal(d["price"]),
            trigger_price=None if d.get("trigger_price") is None else Decimal(d["trigger_price"]),
            purpose=None if d.get("purpose") is None else Purpose(d["purpose"]),
            broker_order_id=d.get("broker_order_id"),
            group_id=d.get("group_id"),
            condition=d.get("condition"),
            runtime_price=bool(d.get("runtime_price")),
            price_note=d.get("price_note", ""),
            risk=d.get("risk", ""),
            refused=bool(d.get("refused")),
            reason=d.get("reason", ""),
        )


@dataclass(frozen=True, slots=True)
class StepPlan:
    step_id: str
    kind: str
    verdict: Verdict
    message: str
    timing: str
    calls: tuple[PlannedCall, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.step_id,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "message": self.message,
            "timing": self.timing,
            "calls": [c.to_dict() for c in self.calls],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepPlan:
        calls = tuple(PlannedCall.from_dict(c) for c in d["calls"])
        return cls(d["id"], d["kind"], Verdict(d["verdict"]), d["message"], d["timing"], calls)


# --- observed state --------------------------------------------------------------------------------


def _money(v: Decimal | None) -> str | None:
    return None if v is None else format(v.normalize(), "f")


def order_row(o: Order) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id,
        "broker_order_id": o.broker_order_id,
        "instrument": o.instrument.key,
        "side": o.side.value,
        "quantity": o.quantity,
        "filled_quantity": o.filled_quantity,
        "status": o.status.value,
        "order_type": o.order_type.value,
        "product": o.product.value,
        "price": _money(o.price),
        "trigger_price": _money(o.trigger_price),
        "tag": o.tag,
    }


def order_key(o: Order | dict[str, Any]) -> str:
    cid, boid = (
        (o.client_order_id, o.broker_order_id)
        if isinstance(o, Order)
        else (
            o["client_order_id"],
            o["broker_order_id"],
        )
    )
    return cid or f"#{boid}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the plan was computed from: live orders, non-flat positions, and this run's journal state."""

    open_orders: tuple[dict[str, Any], ...]
    positions: tuple[dict[str, Any], ...]
    run: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        doc = {"open_orders": self.open_orders, "positions": self.positions, "run": self.run}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "open_orders": list(self.open_orders),
            "positions": list(self.positions),
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(tuple(d["open_orders"]), tuple(d["positions"]), d["run"])


@dataclass(frozen=True, slots=True)
class Observed:
    snapshot: Snapshot
    open_orders: tuple[Order, ...]
    positions: tuple[Position, ...]


async def observe(broker: Broker, journal: Journal, run_id: str) -> Observed:
    """Read-only: the broker's open orders and positions, and what the journal holds for ``run_id``."""
    opens = sorted((o for o in await broker.open_orders() if is_live(o)), key=order_key)
    positions = sorted((p for p in await broker.positions() if p.quantity), key=position_key)
    steps = journal.steps_of(run_id)
    run = {
        "steps": {k: v.outcome.value for k, v in sorted(steps.items())},
        "intents": {i.client_order_id: i.status.value for i in journal.intents(run_id=run_id)},
    }
    snap = Snapshot(
        tuple(order_row(o) for o in opens),
        tuple(
            {"instrument": p.instrument.key, "product": p.product.value, "quantity": p.quantity}
            for p in positions
        ),
        run,
    )
    return Observed(snap, tuple(opens), tuple(positions))


def drift(planned: Snapshot, live: Snapshot) -> list[str]:
    """Human-readable differences between the state a plan was made from and the live state."""
    out: list[str] = []
    before = {order_key(o): o for o in planned.open_orders}
    after = {order_key(o): o for o in live.open_orders}
    for k in sorted(before.keys() | after.keys()):
        a, b = before.get(k), after.get(k)
        if a == b:
            continue
        if a is None:
            assert b is not None
            out.append(f"+ open order {k}: {_row_text(b)} (new since the plan)")
        elif b is None:
            out.append(f"- open order {k}: {_row_text(a)} (no longer open)")
        else:
            changes = ", ".join(f"{f} {a[f]} -> {b[f]}" for f in a if a[f] != b.get(f))
            out.append(f"~ open order {k}: {changes}")
    pos_a = {f"{p['instrument']} {p['product']}": p["quantity"] for p in planned.positions}
    pos_b = {f"{p['instrument']} {p['product']}": p["quantity"] for p in live.positions}
    for k in sorted(pos_a.keys() | pos_b.keys()):
        if pos_a.get(k, 0) != pos_b.get(k, 0):
            out.append(f"~ position {k}: {pos_a.get(k, 0)} -> {pos_b.get(k, 0)}")
    for part in ("steps", "intents"):
        a_, b_ = planned.run.get(part, {}), live.run.get(part, {})
        for k in sorted(a_.keys() | b_.keys()):
            if a_.get(k) != b_.get(k):
                what = "step" if part == "steps" else "order"
                out.append(f"~ journal: this run's {what} {k}: {a_.get(k, '-')} -> {b_.get(k, '-')}")
    return out


def _row_text(o: dict[str, Any]) -> str:
    price = f" @ {o['price']}" if o.get("price") else ""
    return f"{o['side']} {o['quantity']} {o['instrument']} {o['order_type']}{price} {o['status']}"


# --- the plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaybookSource:
    path: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Plan:
    playbook: str  # name
    source: PlaybookSource
    account: str
    broker: str
    run_id: str
    scheduled_for: dt.datetime
    ignore_at: bool
    created_at: dt.datetime
    state: Snapshot
    steps: tuple[StepPlan, ...]
    positions: tuple[dict[str, Any], ...]  # instrument, product, before, after
    orders: tuple[dict[str, Any], ...]  # open orders before -> after
    accounts_file: str | None = None
    db: str | None = None  # only recorded when it carries no password

    @property
    def calls(self) -> list[PlannedCall]:
        return [c for s in self.steps for c in s.calls]

    @property
    def refused(self) -> bool:
        return any(s.verdict is Verdict.REFUSED for s in self.steps)

    @property
    def fails(self) -> bool:
        return any(s.verdict is Verdict.FAILS for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at.isoformat(),
            "playbook": {
                "name": self.playbook,
                "path": self.source.path,
                "sha256": self.source.sha256,
                "content": self.source.content,
            },
            "account": self.account,
            "broker": self.broker,
            "accounts_file": self.accounts_file,
            "db": self.db,
            "run_id": self.run_id,
            "scheduled_for": self.scheduled_for.isoformat(),
            "ignore_at": self.ignore_at,
            "state": self.state.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "projection": {"positions": list(self.positions), "orders": list(self.orders)},
        }


class PlanFileError(ValueError):
    """Not a plan file this version can apply."""


def plan_from_dict(d: Any) -> Plan:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PlanFileError("not a runner plan file (write one with `runner plan PLAYBOOK --out FILE`)")
    if d.get("version") != VERSION:
        raise PlanFileError(f"plan file version {d.get('version')!r} is not supported (expected {VERSION})")
    try:
        pb = d["playbook"]
        source = PlaybookSource(pb["path"], pb["content"])
        if source.sha256 != pb["sha256"]:
            raise PlanFileError("plan file is corrupt: the stored playbook does not match its hash")
        state = Snapshot.from_dict(d["state"])
        if state.fingerprint != d["state"]["fingerprint"]:
            raise PlanFileError("plan file is corrupt: the stored state does not match its fingerprint")
        return Plan(
            playbook=pb["name"],
            source=source,
            account=d["account"],
            broker=d["broker"],
            run_id=d["run_id"],
            scheduled_for=dt.datetime.fromisoformat(d["scheduled_for"]),
            ignore_at=bool(d["ignore_at"]),
            created_at=dt.datetime.fromisoformat(d["created_at"]),
            state=state,
            steps=tuple(StepPlan.from_dict(s) for s in d["steps"]),
            positions=tuple(d["projection"]["positions"]),
            orders=tuple(d["projection"]["orders"]),
            accounts_file=d.get("accounts_file"),
            db=d.get("db"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PlanFileError):
            raise
        raise PlanFileError(f"plan file is malformed: {type(exc).__name__}: {exc}") from None


# --- the planner --------------------------------------------------------------------------------------


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


def timing_text(step: Any) -> str:
    parts = []
    if step.at is not None:
        parts.append(f"at {step.at}" + (f" (late: {step.late})" if step.late else ""))
    if step.after is not None:
        parts.append(f"{step.after} after the previous step")
    return ", ".join(parts) or "right after the previous step"


def as_order(req: OrderRequest) -> Order:
    return Order(
        client_order_id=req.client_order_id,
        broker_order_id=None,
        instrument=req.instrument,
        side=req.side,
        quantity=req.quantity,
        order_type=req.order_type,
        product=req.product,
        status=OrderStatus.OPEN,
        price=req.price,
        trigger_price=req.trigger_price,
        validity=req.validity,
        tag=req.tag,
    )


def _call(op: CallOp, o: Order | OrderRequest, **kw: Any) -> PlannedCall:
    return PlannedCall(
        op=op,
        client_order_id=kw.pop("cid", o.client_order_id),
        instrument=o.instrument.key,
        side=kw.pop("side", o.side),
        quantity=kw.pop("quantity", o.quantity),
        order_type=kw.pop("order_type", o.order_type),
        product=o.product.value,
        price=kw.pop("price", o.price),
        trigger_price=kw.pop("trigger_price", o.trigger_price),
        **kw,
    )


@dataclass
class _Draft:
    calls: list[PlannedCall] = field(default_factory=list)
    verdict: Verdict = Verdict.PLANNED
    message: str = ""


@dataclass(frozen=True, slots=True)
class _Slot:
    slot: str
    leg: int
    attempt: int
    purpose: Purpose


class Planner:
    """Walks the steps once over a projected copy of the observed state. Reads only."""

    def __init__(
        self,
        pb: Playbook,
        broker: Broker,
        journal: Journal,
        observed: Observed,
        *,
        run_id: str,
        now: dt.datetime,
        run_date: dt.date,
        ignore_at: bool,
        risk: RiskChecker,
        account: str | None = None,
    ) -> None:
        self.pb, self.broker, self.journal, self.run_id = pb, broker, journal, run_id
        self.account = account or pb.account
        self.now, self.ignore_at, self.risk = now, ignore_at, risk
        self.tz = ZoneInfo(pb.timezone)
        self.run_date = run_date
        self.observed_open = {order_key(o): o for o in observed.open_orders}
        self.open: dict[str, Order] = dict(self.observed_open)  # projected live orders
        self.observed_positions = {position_key(p): p.quantity for p in observed.positions}
        self.positions = {position_key(p): p for p in observed.positions}  # projected
        self.planned: dict[str, Order] = {}  # every order this plan places, by client id
        self.slots: dict[str, _Slot] = {}
        self.intents = journal.intents(run_id=run_id)
        for i in self.intents:
            self.slots[i.client_order_id] = _Slot(i.slot, i.leg, i.attempt, i.purpose)
        self.entries = journal.count_intents(run_id, exclude=(Purpose.UNWIND, Purpose.SQUARE_OFF))
        self.ours = {i.client_order_id for i in self.intents}  # this run's, for this_run_only
        self.own = run_net(self.intents)  # this run's net filled quantity, projected with its orders
        self.filled: list[OrderRequest] = []  # this plan's orders projected to fill (for scoped square-offs)
        self.prices: dict[str, Decimal | None] = {}
        self.can_modify = Capability.MODIFY in broker.capabilities
        self._handlers: dict[str, Callable[[_Draft, Any], Awaitable[None]]] = {
            "place": self._place_step,
            "spread": self._spread,
            "modify": self._modify_step,
            "cancel": self._cancel,
            "square_off": self._square_off,
            "wait": self._wait,
        }

    # --- reads ----------------------------------------------------------------------------------------

    async def _ref(self, ins: Any) -> Decimal | None:
        if ins.key not in self.prices:
            price = None
            if isinstance(self.broker, QuoteSource):
                try:
                    price = await self.broker.ltp(ins)
                except BrokerError:
                    price = None
            self.prices[ins.key] = price
        return self.prices[ins.key]

    async def _ltp(self, ins: Any) -> Decimal:
        ltp = await self._ref(ins)
        if ltp is None:
            raise StepError(
                f"{ins.key}: no last traded price now, so a price relative to LTP cannot be resolved"
            )
        return ltp

    async def _request(self, f: OrderFields, slot: str, leg: int) -> tuple[OrderRequest, dict[str, Any]]:
        """The request as the step builds it, and PlannedCall fields for LTP-relative prices (estimated
        from the price now; a slot journaled earlier keeps its resolved price)."""
        if not is_relative(f.price, f.trigger_price):
            return build_request(self.pb, f), {}
        intent = self.journal.get_intent(client_order_id(self.run_id, slot, leg, 0))
        if intent is not None:
            return intent.request, {}
        req = build_request(self.pb, f, await self._ltp(self.pb.instrument(f.instrument)))
        notes = []
        if isinstance(f.price, LtpPrice):
            notes.append(f"{f.price.offset.label} (≈ {req.price} now)")
        if isinstance(f.trigger_price, LtpPrice):
            notes.append(f"trg {f.trigger_price.offset.label} (≈ {req.trigger_price} now)")
        return req, {"runtime_price": True, "price_note": "; ".join(notes)}

    async def _lookup(self, cid: str) -> Order | None:
        try:
            return await self.broker.get_order(cid)
        except BrokerError:
            return None

    # --- projection helpers -----------------------------------------------------------------------

    def _fill(self, req: OrderRequest) -> None:
        key = f"{req.instrument.key}|{req.product.value}"
        delta = req.quantity * req.side.sign
        self.own[key] = self.own.get(key, 0) + delta
        self.filled.append(req)
        p = self.positions.get(key)
        self.positions[key] = (
            dataclasses.replace(p, quantity=p.quantity + delta)
            if p is not None
            else Position(req.instrument, req.product, delta)
        )

    def _project(self, req: OrderRequest, slot: _Slot) -> None:
        order = as_order(req)
        self.planned[req.client_order_id] = order
        self.slots[req.client_order_id] = slot
        if req.order_type in FILLS:
            self._fill(req)
        else:
            self.open[req.client_order_id] = order

    async def _check(self, req: OrderRequest, purpose: Purpose, count: int | None = None) -> str:
        if purpose.reduces_risk:
            return "exempt: reduces risk"
        ref = await self._ref(req.instrument) if self.risk.needs_price else None
        self.risk.check(req, orders_so_far=self.entries if count is None else count, reference_price=ref)
        return "ok"

    async def _place(
        self,
        d: _Draft,
        req: OrderRequest,
        slot: _Slot,
        *,
        op: CallOp = CallOp.PLACE,
        condition: str | None = None,
        project: bool = True,
        **kw: Any,
    ) -> None:
        cid = client_order_id(self.run_id, slot.slot, slot.leg, slot.attempt)
        req = dataclasses.replace(req, client_order_id=cid)
        if self.journal.get_intent(cid) is not None:
            risk = "journaled earlier: looked up by client id, sent again only if the broker never got it"
        else:
            try:
                risk = await self._check(req, slot.purpose)
            except RiskRefused as exc:
                d.calls.append(
                    _call(op, req, purpose=slot.purpose, risk=f"refused: {exc}", refused=True, **kw)
                )
                raise
            if not slot.purpose.reduces_risk:
                self.entries += 1
        d.calls.append(_call(op, req, purpose=slot.purpose, condition=condition, risk=risk, **kw))
        if project:
            self._project(req, slot)

    def _modify(self, d: _Draft, order: Order, change: Modification, condition: str, reason: str) -> Order:
        """A conditional modify; without in-place modify the gateway cancels and places attempt + 1.
        Returns the order as it would stand afterwards."""
        new_type = change.order_type or order.order_type
        price = None if new_type is OrderType.MARKET else (change.price or order.price)
        fields: dict[str, Any] = {
            "quantity": change.quantity or order.quantity,
            "order_type": new_type,
            "price": price,
            "trigger_price": change.trigger_price or order.trigger_price,
        }
        old = order.client_order_id
        s = self.slots.get(old)
        if self.can_modify or s is None:
            d.calls.append(_call(CallOp.MODIFY, order, condition=condition, reason=reason, **fields))
        else:
            d.calls.append(_call(CallOp.CANCEL, order, condition=condition, reason=reason + " (replace)"))
            purpose = s.purpose if s.purpose.reduces_risk else Purpose.REPLACE
            nxt = _Slot(s.slot, s.leg, s.attempt + 1, purpose)
            cid = client_order_id(self.run_id, nxt.slot, nxt.leg, nxt.attempt)
            self.slots[cid] = nxt
            d.calls.append(
                _call(
                    CallOp.PLACE,
                    order,
                    cid=cid,
                    purpose=purpose,
                    condition=condition + " (no in-place modify: cancel, then replace)",
                    runtime_price=True,
                    risk="checked when sent",
                    reason=reason,
                    **fields,
                )
            )
        after = order.evolve(client_order_id=d.calls[-1].client_order_id, **fields)
        if old in self.open:
            del self.open[old]
            self.open[after.client_order_id] = after
        return after

    async def _targets(self, ref: str) -> list[tuple[Order, bool]]:
        """The latest order of each referenced slot: (order, exists at the broker already)."""
        out = []
        for slot, leg in ref_slots(self.pb, ref):
            intents = [i for i in self.intents if i.slot == slot and i.leg == leg]
            if intents:
                latest = max(intents, key=lambda i: i.attempt)
                cid = latest.client_order_id
                found = self.open.get(cid) or await self._lookup(cid) or Gateway.order_from_intent(latest)
                out.append((found, True))
                continue
            planned = self.planned.get(client_order_id(self.run_id, slot, leg, 0))
            if planned is not None:
                out.append((self.open.get(planned.client_order_id, planned), False))
        return out

    def _filled_in_projection(self, o: Order) -> bool:
        return o.client_order_id in self.planned and o.client_order_id not in self.open

    # --- steps ----------------------------------------------------------------------------------------

    async def plan_steps(self) -> list[StepPlan]:
        done = self.journal.steps_of(self.run_id)
        blocked = any(
            r.outcome in (StepOutcome.FAILED, StepOutcome.REFUSED, StepOutcome.STOPPED) for r in done.values()
        )
        clock = self.now
        out = []
        for step in self.pb.steps:
            timing = timing_text(step)
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
                await self._handlers[step.kind](d, step)
            except RiskRefused as exc:
                d.verdict, d.message = Verdict.REFUSED, f"refused by pre-trade limits: {exc}"
            except StepError as exc:
                d.verdict, d.message = Verdict.FAILS, str(exc)
            if d.verdict in (Verdict.REFUSED, Verdict.FAILS):
                blocked = True
            out.append(StepPlan(step.id, step.kind, d.verdict, d.message, timing, tuple(d.calls)))
        return out

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
        for k in range(int(abs(price - origin) / spec.tick), spec.max):
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
        d.message = f"chase {order.side.value} {origin} by {spec.tick} every {spec.every}, limit {limit}"

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
        for pos in targets:
            ins = enrich(self.pb, pos.instrument)
            ref = await self._ref(ins) if step.escalation is not None else None
            if step.escalation is not None and ref is None:
                notes.append(f"{ins.key}: no price reference, closing at market")
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
        d.message = "; ".join(notes)
        if not d.calls:
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

    # --- projection -----------------------------------------------------------------------------------

    def projection(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        positions = []
        for key in sorted(self.observed_positions.keys() | self.positions.keys()):
            before = self.observed_positions.get(key, 0)
            p = self.positions.get(key)
            after = p.quantity if p is not None else before
            if before or after:
                ins, product = key.rsplit("|", 1)
                positions.append({"instrument": ins, "product": product, "before": before, "after": after})
        orders = []
        for k, o in self.observed_open.items():
            row = order_row(o)
            orders.append(
                {**row, "before": o.status.value, "after": o.status.value if k in self.open else "cancelled"}
            )
        for k, o in self.open.items():
            if k not in self.observed_open:
                orders.append({**order_row(o), "before": None, "after": "open (new, resting)"})
        return positions, orders


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
    run_id = make_run_id(run_key or pb.name, scheduled_for)
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


__all__ = [
    "CallOp",
    "Observed",
    "Plan",
    "PlanFileError",
    "PlannedCall",
    "PlaybookSource",
    "Snapshot",
    "StepPlan",
    "Verdict",
    "drift",
    "make_plan",
    "observe",
    "plan_from_dict",
]
