"""Seeded fault injection shared by every broker simulator.

Spec syntax (``runner sim blitz --faults ...``), comma-separated ``name=value``:
  latency=20ms          added to every reply (or ``latency=5ms..50ms`` for a uniform range)
  5xx=0.05              probability of an HTTP 500 / error frame *before* acting on the request
  429=0.05              probability of a rate-limit reply (with Retry-After: 1)
  reset=0.02            probability of closing the connection before acting
  drop=0.05             probability of acting on an order request and then dropping the reply (the
                        ambiguous case: the order exists, the client never hears so)
  disconnect=0.02       (WebSocket) probability of closing the socket mid-request, before acting
  expire=300s           sessions/tokens expire after this long
  seed=42               RNG seed (default 0)
  only=place+cancel     restrict probabilistic faults to these operations, joined by "+" (default:
                        the mutating ones)
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from decimal import Decimal

from runner.playbook.models import parse_duration


class Fault(enum.Enum):
    NONE = "none"
    ERROR_5XX = "5xx"
    RATE_LIMIT = "429"
    RESET = "reset"
    DROP_REPLY = "drop"
    DISCONNECT = "disconnect"


MUTATING = frozenset({"place", "modify", "cancel", "place_multileg", "cancel_multileg", "modify_multileg"})


@dataclass
class FaultPlan:
    latency: tuple[float, float] = (0.0, 0.0)
    probabilities: dict[Fault, float] = field(default_factory=dict)
    expire_after: float | None = None
    seed: int = 0
    only: frozenset[str] = MUTATING
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        plan = cls()
        if not spec:
            return plan
        probs: dict[Fault, float] = {}
        for item in spec.split(","):
            name, _, value = item.strip().partition("=")
            if not name:
                continue
            if name == "latency":
                lo, _, hi = value.partition("..")
                lo_s = parse_duration(lo).total_seconds()
                plan.latency = (lo_s, parse_duration(hi).total_seconds() if hi else lo_s)
            elif name == "expire":
                plan.expire_after = parse_duration(value).total_seconds()
            elif name == "seed":
                plan.seed = int(value)
            elif name == "only":
                plan.only = frozenset(v.strip() for v in value.split("+") if v.strip()) or MUTATING
            else:
                try:
                    fault = Fault(name)
                except ValueError:
                    known = ", ".join(f.value for f in Fault if f is not Fault.NONE)
                    raise ValueError(
                        f"unknown fault {name!r} (known: latency, expire, seed, only, {known})"
                    ) from None
                p = Decimal(value)
                if not 0 <= p <= 1:
                    raise ValueError(f"fault probability for {name} must be within 0..1")
                probs[fault] = float(p)  # a probability, not money
        plan.probabilities = probs
        plan._rng = random.Random(plan.seed)
        return plan

    @property
    def active(self) -> bool:
        return bool(self.probabilities) or self.latency != (0.0, 0.0) or self.expire_after is not None

    def delay(self) -> float:
        lo, hi = self.latency
        return lo if lo == hi else self._rng.uniform(lo, hi)

    def draw(self, operation: str) -> Fault:
        """Which fault (if any) hits this request. Deterministic for a given seed and call order."""
        if operation not in self.only or not self.probabilities:
            return Fault.NONE
        roll = self._rng.random()
        acc = 0.0
        for fault, p in self.probabilities.items():
            acc += p
            if roll < acc:
                return fault
        return Fault.NONE
