"""Step dispatch: :data:`HANDLERS` maps a step's ``kind`` to its coroutine (one module per kind)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from runner.engine.steps import cancel, modify, place, spread, square_off, wait
from runner.engine.steps.common import RunContext, StepResult

Handler = Callable[[RunContext, Any], Awaitable[StepResult]]

HANDLERS: dict[str, Handler] = {
    "place": place.run,
    "spread": spread.run,
    "modify": modify.run,
    "cancel": cancel.run,
    "square_off": square_off.run,
    "wait": wait.run,
}

# Kinds that only reduce risk: they still run after an earlier step failed.
EXIT_KINDS = frozenset({"cancel", "square_off"})

