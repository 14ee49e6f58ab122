"""One run as a person reads it, defined once: ``runner show`` renders it as text and JSON, the status
page's run page renders :meth:`RunReport.to_json` as it is.

Per order: its price history (placed at, each modify, each chase step numbered, a conversion to MARKET,
each fill with price and quantity, the final status), so a chased BUY filled above its first limit says
why. Per run: the P&L realised by the run's own fills where they net (average cost per instrument);
"n/a" (``None``) where it cannot be computed: never 0.

Nothing here asks the broker: an order that is not final shows the journal's state with its as-of time.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.journal.order_changes import ChangeKind, OrderChange, changes_of
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import RunStatus, events, fills
from runner.liveness import describe
from runner.model import Side
from runner.timefmt import when


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _money(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event in an order's life: ``what`` is placed / modify / chase / to_market / fill / status."""

    at: dt.datetime
    what: str
    step: str | None = None
    chase_step: int | None = None
    order_type: str | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    quantity: int | None = None
    applied: bool = True
    status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "what": self.what,
            "step": self.step,
            "chase_step": self.chase_step,
            "type": self.order_type,
            "price": _money(self.price),
            "trigger_price": _money(self.trigger_price),
            "quantity": self.quantity,
            "applied": self.applied,
            "status": self.status,
        }

    def text(self, zone: str | None) -> str:
        """e.g. ``chase 2 LIMIT 24010 at 09:15:04 IST``; times in the run's zone, zone named."""
        if self.what == "fill":
            head = f"filled {self.quantity} @ {self.price}"
        elif self.what == "status":
            head = f"final status {self.status}"
        else:
            label = {
                "placed": "placed",
                ChangeKind.MODIFY.value: "modify",
                ChangeKind.CHASE.value: f"chase {self.chase_step}",
                ChangeKind.TO_MARKET.value: "to MARKET",
            }[self.what]
            parts = [label]
            if self.what != ChangeKind.TO_MARKET.value:
                if self.order_type:
                    parts.append(self.order_type)
                if self.price is not None:
                    parts.append(str(self.price))
                if self.trigger_price is not None:
                    parts.append(f"trigger {self.trigger_price}")
                if self.quantity is not None and self.what != "placed":
                    parts.append(f"qty {self.quantity}")
            if not self.applied:
                parts.append("(not applied)")
            head = " ".join(parts)
        return f"{head} at {when(self.at, zone)}"


@dataclass(frozen=True, slots=True)
class InstrumentPnl:
    instrument: str
    bought: int
    sold: int
    realised: Decimal | None  # None: nothing netted, or a fill without a price
    open_quantity: int  # > 0 long, < 0 short: left open by the run (its P&L is unrealised, not known here)

    def to_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "bought": self.bought,
            "sold": self.sold,
            "realised": _money(self.realised),
            "open_quantity": self.open_quantity,
        }


@dataclass(frozen=True, slots=True)
class RunPnl:
    instruments: tuple[InstrumentPnl, ...]

    @property
    def realised(self) -> Decimal | None:
        """The run's realised P&L; None ("n/a") unless some instrument netted and every priced one did."""
        known = [i.realised for i in self.instruments if i.realised is not None]
        if not known or any(i.realised is None and (i.bought and i.sold) for i in self.instruments):
            return None
        return sum(known, Decimal(0))

    @property
    def note(self) -> str | None:
        if not self.instruments:
            return "no fills"
        open_ = [i.instrument for i in self.instruments if i.open_quantity]
        if open_:
            return "left open by the run (unrealised P&L: see `runner positions`): " + ", ".join(open_)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "realised": _money(self.realised),
            "note": self.note,
            "instruments": [i.to_json() for i in self.instruments],
        }


def run_pnl(fill_rows: list[dict[str, Any]], intents: dict[str, Intent]) -> RunPnl:
    """Average-cost P&L of the run's own fills, per instrument, in fill order; money: price points x
    quantity x the instrument's price multiplier (commodity and currency contracts; 1 otherwise)."""
    by: dict[str, list[tuple[Side, int, Decimal | None]]] = {}
    multipliers: dict[str, Decimal] = {}
    for f in sorted(fill_rows, key=lambda r: (r["at"], r["id"])):
        intent = intents.get(f["client_order_id"])
        if intent is None:
            continue
        multipliers[intent.request.instrument.key] = intent.request.instrument.multiplier
        by.setdefault(intent.request.instrument.key, []).append(
            (intent.request.side, int(f["quantity"]), f["price"])
        )
    out = []
    for key, rows in by.items():
        qty, cost = 0, Decimal(0)  # open quantity (signed) and its cost at average price
        realised: Decimal | None = Decimal(0)
        netted = False
        bought = sum(q for s, q, _ in rows if s is Side.BUY)
        sold = sum(q for s, q, _ in rows if s is Side.SELL)
        for side, q, price in rows:
            if price is None:
                realised = None
                break
            signed = q * side.sign
            if qty == 0 or (qty > 0) == (signed > 0):  # opens or adds
                qty, cost = qty + signed, cost + price * signed
                continue
            closing = min(abs(signed), abs(qty))
            avg = cost / qty
            realised = (realised or Decimal(0)) + (price - avg) * closing * (1 if qty > 0 else -1)
            netted = True
            cost -= avg * closing * (1 if qty > 0 else -1)
            qty += closing * (1 if signed > 0 else -1)
            rest = abs(signed) - closing
            if rest:  # flipped: the rest opens the other way
                qty, cost = rest * (1 if signed > 0 else -1), price * rest * (1 if signed > 0 else -1)
        out.append(
            InstrumentPnl(
                instrument=key,
                bought=bought,
                sold=sold,
                realised=realised * multipliers[key] if netted and realised is not None else None,
                open_quantity=qty if realised is not None else bought - sold,
            )
        )
    return RunPnl(tuple(out))


def history_of(
    intent: Intent, changes: list[OrderChange], fill_rows: list[dict[str, Any]]
) -> list[HistoryEntry]:
    req = intent.request
    out = [
        HistoryEntry(
            at=intent.created_at,
            what="placed",
            step=intent.step_id,
            order_type=req.order_type.value,
            price=req.price,
            trigger_price=req.trigger_price,
            quantity=req.quantity,
        )
    ]
    for c in changes:
        out.append(
            HistoryEntry(
                at=c.at,
                what=c.kind.value,
                step=c.step_id,
                chase_step=c.chase_step,
                order_type=c.order_type.value if c.order_type is not None else None,  # None: unchanged
                price=c.price,
                trigger_price=c.trigger_price,
                quantity=c.quantity,
                applied=c.applied,
            )
        )
    for f in fill_rows:
        out.append(HistoryEntry(at=f["at"], what="fill", quantity=int(f["quantity"]), price=f["price"]))
    out.sort(key=lambda e: e.at)  # stable: a fill stamped with its change's instant stays after it
    return out


@dataclass(slots=True)
class RunReport:
    run: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    broker_calls: dict[str, int] = field(default_factory=dict)
    pnl: RunPnl = field(default_factory=lambda: RunPnl(()))
    instruments: list[dict[str, Any]] = field(default_factory=list)  # rolling aliases as resolved

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (times ISO 8601 with offset, money as decimal text)."""
        return {
            "run": self.run,
            "steps": self.steps,
            "orders": self.orders,
            "fills": self.fills,
            "errors": self.errors,
            "broker_calls": self.broker_calls,
            "pnl": self.pnl.to_json(),
            "instruments": self.instruments,
        }


def resume_hint(run: Any) -> str:
    """Re-running an interrupted run's remaining steps stays a human decision: say how."""
    return (
        "its remaining steps did not run; after checking the account, re-run them with "
        f"`runner run <{run.playbook} playbook file> --resume {run.run_id}` (finished steps are not "
        "repeated, orders in flight are looked up, never re-sent)"
    )


def resolved_rows(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    """The run's rolling instruments as resolved (runner.journal.resolved): contract, rule, LTP used."""
    from runner.journal.resolved import ResolvedInstruments

    return [
        {
            "alias": r.alias,
            "instrument": r.instrument.key,
            "rule": r.rule,
            "underlying": r.underlying,
            "underlying_ltp": None if r.underlying_ltp is None else format(r.underlying_ltp, "f"),
            "lot_size": r.instrument.lot_size,
            "tick_size": None if r.instrument.tick_size is None else format(r.instrument.tick_size, "f"),
            "resolved_at": r.resolved_at.isoformat(),
        }
        for r in ResolvedInstruments(journal.engine).of_run(run_id).values()
    ]


def build(journal: Journal, run_id: str) -> RunReport:
    run = journal.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r} in the journal")
    dead = run.status is RunStatus.RUNNING and not journal.holder_alive(run)
    steps = journal.steps_of(run_id)
    group_starts: dict[str, str] = {}  # a parallel group started when its first member did
    for s in sorted(steps.values(), key=lambda s: s.started_at):
        if s.parallel_group is not None:
            group_starts.setdefault(s.parallel_group, s.started_at.isoformat())
    intents = journal.intents(run_id=run_id)
    calls = journal.calls(run_id=run_id)
    fill_rows = journal.rows(fills, run_id)
    changes = changes_of(journal.engine, run_id)
    zone = run.timezone
    orders = []
    for i in intents:
        history = history_of(
            i,
            [c for c in changes if c.client_order_id == i.client_order_id],
            [f for f in fill_rows if f["client_order_id"] == i.client_order_id],
        )
        if i.status.is_terminal:
            history.append(
                HistoryEntry(at=i.updated_at or i.created_at, what="status", status=i.status.value)
            )
        orders.append(
            {
                "client_order_id": i.client_order_id,
                "step": i.step_id,
                "leg": i.leg,
                "attempt": i.attempt,
                "purpose": i.purpose.value,
                "instrument": i.request.instrument.key,
                "side": i.request.side.value,
                "quantity": i.request.quantity,
                "type": i.request.order_type.value,
                "price": _money(i.request.price),
                "trigger_price": _money(i.request.trigger_price),
                "status": i.status.value,
                "resolution": i.resolution.value,
                "broker_order_id": i.broker_order_id,
                "filled_quantity": i.filled_quantity,
                "average_price": _money(i.average_price),
                "final": i.status.is_terminal,  # else the journal's last word, as of:
                "as_of": (i.updated_at or i.created_at).isoformat(),
                "transitions": [
                    f"{t['old_status']}->{t['new_status']}{'' if t['legal'] else ' (ILLEGAL)'}"
                    for t in journal.transitions(i.client_order_id)
                ],
                "history": [h.to_json() for h in history],
                "history_text": [h.text(zone) for h in history],
            }
        )
    return RunReport(
        run={
            "run_id": run.run_id,
            "playbook": run.playbook,
            "account": run.account,
            "mode": run.mode,
            "scheduled_for": run.scheduled_for.isoformat(),
            "status": run.status.value,
            "starts": run.starts,
            "started_at": run.started_at.isoformat(),
            "finished_at": _iso(run.finished_at),
            "message": run.message,
            "owner": describe(run.owner) if run.owner else None,
            "dead": dead,
            "resume": resume_hint(run) if dead or run.status is RunStatus.INTERRUPTED else None,
            "timezone": run.timezone,
        },
        steps=[
            {
                "id": s.step_id,
                "kind": s.kind,
                "outcome": s.outcome.value,
                "message": s.message,
                "started_at": s.started_at.isoformat(),
                "finished_at": _iso(s.finished_at),
                **(
                    {"group": {"id": s.parallel_group, "started_at": group_starts[s.parallel_group]}}
                    if s.parallel_group is not None
                    else {}
                ),
            }
            for s in steps.values()
        ],
        instruments=resolved_rows(journal, run_id),
        orders=orders,
        fills=[
            {
                "client_order_id": f["client_order_id"],
                "quantity": f["quantity"],
                "price": _money(f["price"]),
                "at": f["at"].isoformat(),
            }
            for f in fill_rows
        ],
        errors=[
            {
                "step": e["step_id"],
                "level": e["level"],
                "kind": e["kind"],
                "message": e["message"],
                "at": e["at"].isoformat(),
            }
            for e in journal.rows(events, run_id)
            if e["level"] != "info"
        ]
        + [
            {
                "step": c["step_id"],
                "level": "error",
                "kind": c["method"],
                "message": f"{c['error']}: {c['error_message']}",
                "at": c["at"].isoformat(),
            }
            for c in calls
            if c["error"]
        ],
        broker_calls=dict(Counter(c["method"] for c in calls)),
        pnl=run_pnl(fill_rows, {i.client_order_id: i for i in intents}),
    )
