"""The kill switch's refusal is noted per step: in a ``parallel`` group, one member refused by the kill
switch while its sibling fails for another reason is REFUSED, and the sibling stays FAILED (one note
shared by the run labelled whichever member finished last)."""

from __future__ import annotations

from pathlib import Path

from helpers.engine import RELIANCE, at, make_env, playbook

from runner.engine.killswitch import ControlStore, ControlWatcher, GuardedBroker, Mode
from runner.model import OrderRequest, Product, Side

GROUP = """
steps:
  - {kind: place, id: exit, instrument: rel, side: SELL, quantity: 5, type: LIMIT, price: 3100, product: MIS}
  - kind: parallel
    id: both
    steps:
      - {kind: wait, id: fill, order: exit, status: [filled], timeout: 5s}
      - {kind: place, id: add, instrument: rel, side: BUY, quantity: 1, product: MIS}
"""


async def test_a_members_kill_switch_refusal_does_not_label_its_siblings_failure(tmp_path: Path) -> None:
    env = make_env(tmp_path, start=at(10, 0))
    await env.broker().place(OrderRequest("seed", RELIANCE, Side.BUY, 10, product=Product.MIS))
    env.clock.advance(1)
    store = ControlStore(env.engine)
    watcher = ControlWatcher(store)
    store.set(Mode.REDUCE_ONLY, "wind down", "ops", env.clock.now())
    await watcher.poll_once()
    report = await env.run(playbook(GROUP), broker=GuardedBroker(env.broker(), watcher), slot=at(10, 0))
    steps = {s.step_id: (s.outcome.value, s.message) for s in report.steps}
    assert steps["exit"][0] == "succeeded"  # reduces the long: allowed
    assert steps["add"][0] == "refused" and "kill switch" in (steps["add"][1] or ""), steps
    assert steps["fill"][0] == "failed" and "kill switch" not in (steps["fill"][1] or ""), steps
