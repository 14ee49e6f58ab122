"""What a run tells its observer (the terminal, the daemon): runs, steps, orders and notes as they happen."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from runner.model import Order


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    ORDER = "order"
    NOTE = "note"
    WAITING = "waiting"  # a step waits for its ``at:``; ``until`` is the instant
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class EngineEvent:
    kind: EventKind
    at: dt.datetime
    step_id: str | None = None
    message: str = ""
    order: Order | None = None
    outcome: str | None = None
    until: dt.datetime | None = None  # WAITING: the instant waited for


Observer = Callable[[EngineEvent], None]
