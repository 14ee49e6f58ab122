"""Account leases: two runs on one account never trade the same position twice."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_helpers import RELIANCE, at, make_env, playbook

from runner.model import OrderRequest, Product, Side

SQUARE_OFF = """
steps:
  - {kind: square_off, id: sq, filter: {}}
"""


class Interleaved:
    """The paper broker, yielding to the event loop before every order leaves: two runs started
    together both read the position before either closes it (the user's race, made deterministic)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def place(self, request: OrderRequest) -> Any:
        for _ in range(20):
            await asyncio.sleep(0)
        return await self._inner.place(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _long_reliance(env: Any, qty: int = 10) -> None:
    book = env.broker()
    await book.place(OrderRequest("seed", RELIANCE, Side.BUY, qty, product=Product.MIS))
    env.clock.advance(1)
    await book.positions()


async def test_two_square_offs_on_one_account_close_the_position_once(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    daemon = playbook(SQUARE_OFF, name="rule-1515")
    operator = playbook(SQUARE_OFF, name="operator")
    reports = await asyncio.gather(
        env.run(daemon, broker=Interleaved(env.broker()), slot=at(15, 15)),
        env.run(operator, broker=Interleaved(env.broker()), slot=at(15, 15, 1)),
    )
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 0, [r.steps for r in reports]
    exits = [o for o in await env.broker().orders() if o.client_order_id != "seed"]
    assert sum(o.quantity for o in exits) == 10
    # The second waited for the first's exclusive lease, then found nothing left to close.
    messages = sorted(r.steps[0].message for r in reports)
    assert messages[0].startswith("flat: 1 position(s) closed"), messages
    assert messages[1] == "nothing to square off", messages
