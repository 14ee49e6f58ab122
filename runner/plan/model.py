"""The plan file's model: each step's verdict and planned broker calls, the playbook it was made from, and
its JSON form (``runner plan --out``; read back by ``runner apply``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.journal.tables import Purpose
from runner.model import OrderType, Side
from runner.plan.groups import GroupLabel
from runner.plan.state import Snapshot

FORMAT = "runner-plan"
VERSION = 1


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
    REFUSED = "refused"  # pre-trade limits or a safety check (StepRefused) refuse it: the run stops there
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
    group: GroupLabel | None = None  # the ``parallel`` group it is a member of

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.step_id,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "message": self.message,
            "timing": self.timing,
            "calls": [c.to_dict() for c in self.calls],
        }
        if self.group is not None:
            d["group"] = self.group.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepPlan:
        calls = tuple(PlannedCall.from_dict(c) for c in d["calls"])
        group = GroupLabel.from_dict(d.get("group"))
        return cls(d["id"], d["kind"], Verdict(d["verdict"]), d["message"], d["timing"], calls, group)


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


__all__ = [
    "FORMAT",
    "VERSION",
    "CallOp",
    "Plan",
    "PlanFileError",
    "PlannedCall",
    "PlaybookSource",
    "StepPlan",
    "Verdict",
    "plan_from_dict",
]
