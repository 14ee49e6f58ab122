"""The projected account state a plan walks: the observed orders and positions, changed by each planned
call as the plan goes, and the primitives the step planners share (price reads, risk checks, place,
modify, target lookup).

The projection ("after") assumes every planned MARKET / LIMIT order fills completely; stop orders stay
resting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.base import Broker, Capability
from runner.engine.gateway import Gateway
from runner.engine.risk import QuoteSource, RiskChecker, RiskRefused
from runner.engine.steps.common import StepError, build_request, is_relative, ref_slots
from runner.engine.steps.square_off import position_key, run_net
from runner.errors import BrokerError
from runner.ids import client_order_id
from runner.journal.store import Journal
from runner.journal.tables import Purpose
from runner.model import Modification, Order, OrderRequest, OrderStatus, OrderType, Position
from runner.plan.model import CallOp, PlannedCall, Verdict
from runner.plan.state import Observed, order_key, order_row
from runner.playbook.models import LtpPrice, OrderFields, Playbook

FILLS = frozenset({OrderType.MARKET, OrderType.LIMIT})  # planned orders of these types fill in the projection


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


class Projection:
    """The observed state, projected through the calls planned so far, and the planning primitives."""

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
