"""Every broker call of a run goes through here: journaling, retries, lookups and read-back verification.

* ``place``: the intent is committed (resolution PENDING) before every send; a journaled intent is always
  looked up before it is sent again, and sent again only when the broker refuses a repeated client id
  (:attr:`Capability.IDEMPOTENT_CLIENT_ID`) or a lookup made well after its last send did not find it.
  Otherwise an unknown outcome fails the step and stays UNKNOWN until a later start reconciles it.
* Retryable errors back off (honouring ``retry_after``); AuthExpired logs in once and retries (the call
  layer, :mod:`runner.engine.calls`); OutcomeUnknown is resolved by ``get_order`` (never a blind
  re-send); Rejected is never retried.
* Pre-trade limits apply to every new order (each leg of a spread counted) and to every modify.
* ``cancel`` / ``modify`` return what reading the order back says, not what the ack said; one that timed
  out and did not land is issued once more (it names an existing order, so it cannot create one).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from runner.brokers.base import Capability, MultilegBroker
from runner.engine.calls import UNSETTLED, BrokerCalls
from runner.engine.changes import applied, modified_request, prices_for
from runner.engine.killswitch import Halted
from runner.engine.records import request_to_dict
from runner.engine.risk import RiskRefused
from runner.errors import BrokerError, NotFound, NotModifiable, OutcomeUnknown, Rejected, Retryable
from runner.ids import client_order_id, leg_client_id
from runner.journal.errors import DuplicateIntent
from runner.journal.offloop import off_loop as in_thread
from runner.journal.order_changes import record_change
from runner.journal.records import Intent
from runner.journal.tables import Purpose, Resolution
from runner.model import Modification, MultilegRequest, Order, OrderRequest, OrderStatus


def is_live(order: Order) -> bool:
    """Working at the broker, or possibly so (not yet acknowledged / unknown)."""
    return order.status.is_working or order.status in UNSETTLED


class Missing(enum.StrEnum):
    """What :meth:`Gateway.settle` says of an intent the broker does not show."""

    ABSENT = "absent"  # proven never received (the gateway's own rule): a new order cannot double it
    UNKNOWN = "unknown"  # not found, not proven absent: it may still show up, and fill


def not_sent(exc: BaseException) -> bool:
    """A refusal made on our side (the kill switch): the broker never saw the request."""
    return isinstance(exc, Halted)


def unknown_message(cid: str) -> str:
    return (
        f"outcome unknown for {cid}; not re-sent; it will be reconciled on the next start / check the broker"
    )


class Gateway(BrokerCalls):
    """The run's broker calls (fields and the call layer: :class:`BrokerCalls`) with resolution, pre-trade
    limits, journal-before-send placing and cancel / modify verified by reading back."""

    # --- reconciliation -------------------------------------------------------------------------------

    @property
    def idempotent(self) -> bool:
        """The broker itself refuses a repeated client id: re-sending after a lookup miss is safe."""
        return Capability.IDEMPOTENT_CLIENT_ID in self.broker.capabilities

    def _absence_proven(self, intent: Intent) -> bool:
        """After a lookup miss: may this intent be treated as never received? Yes when the broker refuses
        repeated ids, when a lookup on an earlier start already said so (ABSENT), or when its last send
        (``sent_at``, committed before every send; any other write moves ``updated_at`` too, so that
        cannot bound it) is long enough ago that even a broker scanning its day book would show it by now."""
        if intent.broker_order_id is not None:  # the broker acknowledged it
            return False
        if self.idempotent or intent.resolution is Resolution.ABSENT:
            return True
        return (self.clock.now() - intent.last_sent).total_seconds() >= self.tuning.absent_after

    async def standing(self, intent: Intent, *, patient: bool | None = None) -> Order | Missing:
        """Where one journaled intent stands, the one rule for a resumed send, a spread's legs, a settle and
        reconciliation: the broker's order when found (or the journal's, when terminal or acknowledged),
        ``Missing.ABSENT`` when a miss proves it never arrived (:meth:`_absence_proven`; not journaled
        here), else ``Missing.UNKNOWN``. Raises OutcomeUnknown when no lookup answered. ``patient``
        (default: while its send is unsettled) keeps looking a little in case it is in flight."""
        cid = intent.client_order_id
        self._ours.add(cid)
        found = await self._resolve(cid, patient=intent.status in UNSETTLED if patient is None else patient)
        if found is not None:
            return found
        if intent.status.is_terminal:  # refused before reaching the broker (e.g. rejected)
            return self.order_from_intent(intent)
        if intent.broker_order_id is not None:  # acknowledged once: a lagging lookup cannot unsay that
            return await self.read(self.order_from_intent(intent))
        return Missing.ABSENT if self._absence_proven(intent) else Missing.UNKNOWN

    async def settle(self, intent: Intent) -> Order | Missing:
        """Where one journaled intent stands (:meth:`standing`), ``Missing.ABSENT`` journaled so; no
        lookup answering is ``Missing.UNKNOWN``. For a step that would otherwise place a *different*
        order in its place (a square-off's next round)."""
        cid = intent.client_order_id
        try:
            where = await self.standing(intent)
        except OutcomeUnknown as exc:
            self.note(f"settle: {cid}: {exc}", level="warning", cid=cid)
            return Missing.UNKNOWN
        if where is Missing.ABSENT and intent.resolution is not Resolution.ABSENT:
            self.journal.set_resolution(cid, Resolution.ABSENT, self.clock.now())
        return where

    async def reconcile(self, *, off_loop: bool = False) -> list[Intent]:
        """Before anything new is sent: resolve by client id every unsettled intent (PENDING_NEW / UNKNOWN,
        whatever its resolution) of this run and of this account's runs that are no longer running, and
        bring their open orders up to date (one day-book read: a fill or cancel nobody was there to see).
        Other RUNNING runs are left alone (:meth:`Journal.reconcilable_intents` says why)."""
        since = self.clock.now() - dt.timedelta(seconds=self.tuning.reconcile_horizon)
        read = functools.partial(self.journal.reconcilable_intents, self.account, self.run_id, since=since)
        revisit = await in_thread(read) if off_loop else read()  # off_loop: prepared at its instant
        pending = [i for i in revisit if i.status in UNSETTLED]
        await self._read_back([i.client_order_id for i in revisit if i.status not in UNSETTLED], "reconcile")
        for intent in pending:
            cid = intent.client_order_id
            try:
                where = await self.standing(intent, patient=False)
            except OutcomeUnknown as exc:
                self.note(f"reconcile: {cid}: {exc}; left unknown", level="warning", cid=cid)
                continue
            if isinstance(where, Order):
                self.note(f"reconcile: {cid} is {where.status.value} at the broker", cid=cid)
            elif where is Missing.ABSENT:
                if intent.resolution is not Resolution.ABSENT:
                    self.journal.set_resolution(cid, Resolution.ABSENT, self.clock.now())
                self.note(
                    f"reconcile: {cid} never reached the broker; will send again if its step runs", cid=cid
                )
            else:
                self.note(
                    f"reconcile: {cid} not found yet, but last sent under {self.tuning.absent_after:g}s ago; "
                    f"left unknown",
                    level="warning",
                    cid=cid,
                )
        return pending

    async def _resolve(self, cid: str, *, patient: bool = True) -> Order | None:
        """Look an order up by client id; when ``patient``, keep looking a little in case it is in flight.
        None only when a lookup answered "no such order": when none answered at all (each timed out or
        the broker was unavailable) nothing is known, and OutcomeUnknown says so. A failed lookup is never
        a miss, or an adapter timing out on reads would turn into a re-send once ``absent_after`` passed."""
        attempts = self.tuning.lookup_attempts if patient else 1
        answered = False
        failure: BrokerError | None = None
        for i in range(attempts):
            try:
                found = await self.lookup(cid)
            except (OutcomeUnknown, Retryable) as exc:
                failure = exc
            else:
                if found is not None:
                    return found
                answered = True
            if i + 1 < attempts:
                await self.clock.sleep(self.tuning.poll_interval * 2**i)
        if not answered:
            why = f"{type(failure).__name__}: {failure}"
            raise OutcomeUnknown(f"outcome unknown for {cid}: no lookup answered ({why})") from failure
        return None

    # --- pre-trade limits ----------------------------------------------------------------------------

    async def _check_risk(self, request: OrderRequest, *, pending: int = 0, new_order: bool = True) -> None:
        """Pre-trade limits for ``request``. ``pending``: orders of the same step checked before it but
        not yet journaled (legs of one spread); ``new_order=False`` (a modify in place) adds no order."""
        risk = self.risk
        if risk is None:
            return
        ref = await self.reference_price(request.instrument) if risk.needs_price else None
        orders = 0  # with new_order=False: "0 + 1 > max" never holds, as max_orders_per_run >= 1
        if new_order and risk.max_orders is not None:
            orders = self.journal.count_intents(self.run_id, exclude=(Purpose.UNWIND, Purpose.SQUARE_OFF))
            orders += pending
        risk.check(request, orders_so_far=orders, reference_price=ref)

    async def _check_modify(self, order: Order, change: Modification, intent: Intent | None) -> None:
        if self.risk is None or (intent is not None and intent.purpose.reduces_risk):
            return
        try:
            request = modified_request(order, change)
        except ValueError as exc:
            raise NotModifiable(f"modify {order.client_order_id}: {exc}") from None
        await self._check_risk(request, new_order=False)

    # --- place ----------------------------------------------------------------------------------------

    def current_intent(self, slot: str, leg: int) -> Intent | None:
        """The latest attempt for a slot/leg (a replace bumps the attempt)."""
        found = [i for i in self.journal.intents(run_id=self.run_id, slot=slot) if i.leg == leg]
        return max(found, key=lambda i: i.attempt) if found else None

    async def place(
        self,
        request: OrderRequest,
        *,
        slot: str,
        leg: int = 0,
        attempt: int = 0,
        purpose: Purpose = Purpose.ENTRY,
    ) -> Order:
        """Place once. ``request.client_order_id`` is ignored: the id comes from (run, slot, leg, attempt)."""
        cid = client_order_id(self.run_id, slot, leg, attempt)
        if request.client_order_id != cid:  # a staged request already carries it (replace costs ~50 us cold)
            request = dataclasses.replace(request, client_order_id=cid)
        if self.risk is not None and not purpose.reduces_risk:
            try:
                await self._check_risk(request)
            except RiskRefused:
                if self.journal.get_intent(cid) is None:  # a resumed intent was allowed when first made
                    raise
        return await self._place_checked(request, slot=slot, leg=leg, attempt=attempt, purpose=purpose)

    async def _place_checked(
        self, request: OrderRequest, *, slot: str, leg: int, attempt: int, purpose: Purpose
    ) -> Order:
        cid = request.client_order_id
        intent = Intent(
            client_order_id=cid,
            run_id=self.run_id,
            account=self.account,
            step_id=self.step_id or slot,
            slot=slot,
            leg=leg,
            attempt=attempt,
            purpose=purpose,
            request=request,
            created_at=self.clock.now(),
        )
        try:
            self.journal.add_intent(intent)  # committed (PENDING) before the request leaves
        except DuplicateIntent:
            self._ours.add(cid)
            return await self._resume(cid)
        self._ours.add(cid)
        return await self._send(request)

    async def _resume(self, cid: str) -> Order:
        """This slot was journaled by an earlier start: continue from the broker's truth. Always looked up
        first, whatever the intent's resolution says."""
        existing = self.journal.get_intent(cid)
        assert existing is not None
        where = await self.standing(existing)
        if isinstance(where, Order):
            return where
        if where is Missing.UNKNOWN:
            raise OutcomeUnknown(unknown_message(cid))
        self.journal.mark_sending((cid,), self.clock.now())  # PENDING + sent_at, committed before the send
        self.note(f"{cid} is not at the broker: sending it under the same id", cid=cid)
        return await self._send(existing.request, resent=True)

    async def _send(self, request: OrderRequest, *, resent: bool = False) -> Order:
        """Send a journaled (PENDING) intent. After OutcomeUnknown it is looked up; sent once more only
        if the broker refuses repeated client ids, else left UNKNOWN for a later start to reconcile."""
        cid = request.client_order_id
        self._log(
            "order_send",
            client_order_id=cid,
            side=request.side.value,
            quantity=request.quantity,
            instrument=request.instrument.key,
            order_type=request.order_type.value,
        )
        while True:
            try:
                order, row = await self.call(
                    "place",
                    lambda: self.broker.place(request),
                    cid=cid,
                    request=request,  # serialized (redacted) into the call row
                    record=False,
                )
            except OutcomeUnknown as exc:
                self.journal.mark_unknown(cid, self.clock.now())
                self.note(f"outcome unknown for {cid} ({exc}); looking it up", level="warning", cid=cid)
                try:
                    found = await self._resolve(cid)
                except OutcomeUnknown as failed:
                    self.note(f"{failed}; {unknown_message(cid)}", level="error", cid=cid)
                    raise OutcomeUnknown(unknown_message(cid)) from failed
                if found is not None:
                    return found
                if resent or not self.idempotent:
                    self.note(unknown_message(cid), level="error", cid=cid)
                    raise OutcomeUnknown(unknown_message(cid)) from exc
                # PENDING + this send's time: a death during the re-send leaves it for reconciliation
                self.journal.mark_sending((cid,), self.clock.now())
                self.note(f"{cid} not at the broker after lookups: sending again under the same id", cid=cid)
                resent = True
                continue
            except Rejected as exc:
                if resent:  # perhaps our earlier send did arrive after all (a duplicate id refused)
                    found = await self._resolve(cid, patient=False)
                    if found is not None:
                        return found
                return self._record(self._rejected(request, exc), resolution=self._refused_by(exc))
            return self._record(order, row)

    @staticmethod
    def _refused_by(exc: BaseException) -> Resolution:
        return Resolution.ABSENT if not_sent(exc) else Resolution.CONFIRMED

    @staticmethod
    def order_from_intent(intent: Intent) -> Order:
        r = intent.request
        return Order(
            client_order_id=intent.client_order_id,
            broker_order_id=intent.broker_order_id,
            instrument=r.instrument,
            side=r.side,
            quantity=r.quantity,
            order_type=r.order_type,
            product=r.product,
            status=intent.status,
            filled_quantity=intent.filled_quantity,
            average_price=intent.average_price,
            price=r.price,
            trigger_price=r.trigger_price,
            validity=r.validity,
            tag=r.tag,
            updated_at=intent.updated_at,
        )

    def _rejected(self, request: OrderRequest, exc: BrokerError) -> Order:
        return Order(
            client_order_id=request.client_order_id,
            broker_order_id=None,
            instrument=request.instrument,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            product=request.product,
            status=OrderStatus.REJECTED,
            price=request.price,
            trigger_price=request.trigger_price,
            validity=request.validity,
            tag=request.tag,
            reject_reason=str(exc),
            updated_at=self.clock.now(),
        )

    async def place_multileg(self, requests: Sequence[OrderRequest], *, slot: str) -> list[Order]:
        """Native spread: legs journaled as intents 1..n of ``slot`` (ids :func:`runner.ids.leg_client_id`
        of the group id, so an adapter can find a leg from the group) in one commit, before the request."""
        assert isinstance(self.broker, MultilegBroker)
        group = client_order_id(self.run_id, slot, 0, 0)
        journaled = {
            i.leg: i
            for i in self.journal.intents(run_id=self.run_id, slot=slot)
            if i.attempt == 0 and 1 <= i.leg <= len(requests)
        }
        legs = [
            dataclasses.replace(
                r, client_order_id=journaled[n].client_order_id if n in journaled else leg_client_id(group, n)
            )
            for n, r in enumerate(requests, start=1)
        ]
        resent = bool(journaled)
        if journaled:  # an earlier start journaled this spread: the broker's truth first
            self._ours.update(i.client_order_id for i in journaled.values())
            where = [await self.standing(journaled[n]) for n in sorted(journaled)]
            known = [w for w in where if isinstance(w, Order)]
            if len(known) == len(where) == len(legs):
                return known
            if known:
                # say "outcome unknown" as every unresolved send does (logs, alerts and the crash check
                # read it): a lagging lookup may not show the other legs yet; nothing is re-sent
                raise OutcomeUnknown(
                    f"outcome unknown for spread {group}: only some legs are at the broker so far; not "
                    "re-sent; it will be reconciled on the next start / check the broker"
                )
            if Missing.UNKNOWN in where:
                raise OutcomeUnknown(unknown_message(group))
            # every leg proven absent: PENDING again with sent_at, committed, before the send
            self.journal.mark_sending([i.client_order_id for i in journaled.values()], self.clock.now())
        elif self.risk is not None:
            for k, leg in enumerate(legs):  # each leg counts the ones before it
                await self._check_risk(leg, pending=k)
        missing = [
            Intent(
                client_order_id=leg.client_order_id,
                run_id=self.run_id,
                account=self.account,
                step_id=self.step_id or slot,
                slot=slot,
                leg=n,
                attempt=0,
                purpose=Purpose.ENTRY,
                request=leg,
                created_at=self.clock.now(),
                group_id=group,
            )
            for n, leg in enumerate(legs, start=1)
            if n not in journaled
        ]
        if missing:
            self.journal.add_intents(missing)  # every leg journaled, in one commit, before the request
            self._ours.update(i.client_order_id for i in missing)
        broker = self.broker
        mreq = MultilegRequest(client_order_id=group, legs=tuple(legs))
        try:
            orders, row = await self.call(
                "place_multileg",
                lambda: broker.place_multileg(mreq),
                cid=group,
                request={"legs": [request_to_dict(r) for r in legs]},
                record=False,
            )
        except OutcomeUnknown as exc:
            for leg in legs:
                self.journal.mark_unknown(leg.client_order_id, self.clock.now())
            found = [await self._resolve(leg.client_order_id) for leg in legs]
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
            self.note(unknown_message(group), level="error", cid=group)
            raise OutcomeUnknown(unknown_message(group)) from exc
        except Rejected as exc:
            if resent:
                found = [await self._resolve(leg.client_order_id, patient=False) for leg in legs]
                if all(f is not None for f in found):
                    return [f for f in found if f is not None]
            why = self._refused_by(exc)
            return [self._record(self._rejected(leg, exc), resolution=why) for leg in legs]
        self.journal.record_call(row)
        return [self._record(o) for o in orders]

    # --- cancel / modify, verified by reading back ------------------------------------------------------

    async def _change(
        self,
        method: str,
        order: Order,
        send: Callable[[Order], Awaitable[Order]],
        request: dict[str, Any],
        landed: Callable[[Order], bool],
    ) -> Order:
        """Issue a cancel / modify and return the order read back. After OutcomeUnknown, if the read-back
        shows the change did not land and the order still works, the same change is issued once more:
        it names an existing order (same broker id, same target state), so a repeat cannot create one."""
        cid = order.client_order_id
        target = order
        for last in (False, True):
            try:
                await self.call(method, functools.partial(send, target), cid=cid, request=request)
            except OutcomeUnknown as exc:
                self.note(f"{method} {cid}: OutcomeUnknown: {exc}; reading back", cid=cid)
                target = await self.read(order)
                if last or landed(target) or not is_live(target):
                    return target
                self.note(f"{method} {cid} did not land; issuing it once more", cid=cid)
                continue
            except (NotModifiable, NotFound) as exc:
                self.note(f"{method} {cid}: {type(exc).__name__}: {exc}; reading back", cid=cid)
            break
        return await self.read(order)

    async def cancel(self, order: Order, *, timeout: float | None = None) -> Order:
        """Cancel and read back until the order is no longer live (cancelled, or filled first)."""
        timeout = self.tuning.verify_timeout if timeout is None else timeout
        if order.status is OrderStatus.UNKNOWN:
            order = await self.read(order)
        if not is_live(order):
            return order
        current = await self._change(
            "cancel",
            order,
            self.broker.cancel,
            {"client_order_id": order.client_order_id, "broker_order_id": order.broker_order_id},
            lambda o: o.status is OrderStatus.PENDING_CANCEL,
        )
        return await self.wait_for(current, lambda o: not is_live(o), timeout)

    async def modify(
        self,
        order: Order,
        change: Modification,
        *,
        timeout: float | None = None,
        chase_step: int | None = None,
    ) -> Order:
        """Modify in place (or cancel + replace without Capability.MODIFY) and read back until the
        broker shows the change or the order is no longer working. Pre-trade limits apply to the order
        as it would stand after the change. The change joins the order's price history (``order_changes``;
        ``chase_step``: its number in a chase)."""
        sent = self.clock.now()
        result = await self._modify(order, change, timeout)
        record_change(
            self.journal.engine,
            self.run_id,
            order.client_order_id,
            change,
            step_id=self.step_id,
            chase_step=chase_step,
            applied=applied(result, change),
            at=sent,
        )
        return result

    async def _modify(self, order: Order, change: Modification, timeout: float | None) -> Order:
        timeout = self.tuning.verify_timeout if timeout is None else timeout
        if Capability.MODIFY not in self.broker.capabilities:
            return await self._replace(order, change, timeout)
        intent = self.journal.get_intent(order.client_order_id) if self.risk is not None else None
        await self._check_modify(order, change, intent)
        broker = self.broker
        current = await self._change(
            "modify",
            order,
            lambda o: broker.modify(o, change),
            {"client_order_id": order.client_order_id, **dataclasses.asdict(change)},
            lambda o: applied(o, change),
        )
        return await self.wait_for(current, lambda o: applied(o, change) or not is_live(o), timeout)

    async def _replace(self, order: Order, change: Modification, timeout: float) -> Order:
        """Cancel, then place the rest under the next attempt of the same slot. ``change.quantity`` is the
        new total, so the replacement carries it less what filled; checked before anything is cancelled."""
        intent = self.journal.get_intent(order.client_order_id)
        if intent is None:
            raise NotModifiable(
                f"order {order.client_order_id} was not placed by this run; cannot replace it"
            )
        total = change.quantity if change.quantity is not None else order.quantity
        if total - order.filled_quantity <= 0:
            raise NotModifiable(
                f"modify {order.client_order_id}: new quantity {total} is not above the "
                f"{order.filled_quantity} already filled"
            )
        new_type = change.order_type or order.order_type
        price, trigger = prices_for(
            new_type,
            change.price or intent.request.price,
            change.trigger_price or intent.request.trigger_price,
        )
        req = dataclasses.replace(
            intent.request,
            quantity=total - order.filled_quantity,
            order_type=new_type,
            price=price,
            trigger_price=trigger,
        )
        purpose = Purpose.REPLACE if not intent.purpose.reduces_risk else intent.purpose
        slot, leg, attempt = intent.slot, intent.leg, intent.attempt + 1
        req = dataclasses.replace(req, client_order_id=client_order_id(self.run_id, slot, leg, attempt))
        if not purpose.reduces_risk:
            await self._check_risk(req)  # before the cancel: a refused change leaves the order working
        cancelled = await self.cancel(order, timeout=timeout)
        if cancelled.status is not OrderStatus.CANCELLED:
            return cancelled
        rest = total - cancelled.filled_quantity  # fills that came in before the cancel took effect
        if rest <= 0:
            self.note(
                f"{order.client_order_id}: {cancelled.filled_quantity} filled before the cancel; "
                f"nothing left to replace",
                cid=order.client_order_id,
            )
            return cancelled
        req = dataclasses.replace(req, quantity=rest)
        return await self._place_checked(req, slot=slot, leg=leg, attempt=attempt, purpose=purpose)


__all__ = [
    "Gateway",
    "Missing",
    "RiskRefused",
    "is_live",
]
