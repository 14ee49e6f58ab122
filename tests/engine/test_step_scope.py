"""Per-step state (issue 15): two steps whose gateway calls interleave each label their own intents, call
rows and logs; nothing per step lives on the run's shared gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runner.engine.core import Engine, RunOptions
from runner.model import Order, OrderRequest
from tests.helpers.engine import at, make_env, playbook

TWO_PLACES = """\
steps:
  - {kind: place, id: a, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 2800, product: MIS}
  - {kind: place, id: b, instrument: rel, side: BUY, quantity: 2, type: LIMIT, price: 2790, product: MIS}
"""


class Interleaving:
    """The paper broker, yielding to the event loop inside every place so the two steps' sends cross."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def place(self, request: OrderRequest) -> Order:
        for _ in range(5):
            await asyncio.sleep(0)
        order: Order = await self._inner.place(request)
        return order


def test_interleaved_steps_label_their_own_intents_and_calls(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    pb = playbook(TWO_PLACES)
    engine = Engine(
        pb,
        Interleaving(env.broker()),
        env.journal,
        env.clock,
        account="paper",
        options=RunOptions(scheduled_for=at(0, 0), ignore_at=True),
    )
    a, b = pb.steps

    async def both() -> None:
        await engine.prepare()
        results = await asyncio.gather(
            engine._run_step(a, 0, resumed=False, previous_end=None),
            engine._run_step(b, 1, resumed=False, previous_end=None),
        )
        assert [r.outcome.value for r in results] == ["succeeded", "succeeded"]

    asyncio.run(both())
    intents = {i.client_order_id: i.step_id for i in env.journal.intents(run_id=engine.run_id)}
    assert sorted(intents.values()) == ["a", "b"]
    places = [c for c in env.journal.calls(run_id=engine.run_id) if c["method"] == "place"]
    assert len(places) == 2
    for call in places:  # the call row names the step whose intent it sent
        assert call["step_id"] == intents[call["client_order_id"]]
    assert engine.gateway.step_id is None  # the run's gateway never carries a step
