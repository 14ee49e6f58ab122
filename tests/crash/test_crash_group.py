"""A run SIGKILLed inside a ``parallel`` group (a real forked process, as tests/helpers/crash.py kills)
resumes each member exactly once: after one member's order reached the broker and before the other's, or
after both did, the next start sends no second order and finds each sent one by a lookup."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.crash import ABSENT_AFTER, Die, Harness, Mode, _playbook, account_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork()")

GROUP_PLAYBOOK = """\
version: 1
name: crashy
timezone: Asia/Kolkata
instruments:
  fut: {exchange: NFO, symbol: NIFTY, expiry: 2026-03-30, lot_size: 75, freeze_quantity: 1800}
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - kind: parallel
    id: legs
    at: "09:20"
    late: run-within 1h
    steps:
      - {kind: place, id: a, instrument: fut, side: BUY, lots: 2}
      - {kind: place, id: b, instrument: rel, side: BUY, quantity: 10}
"""


class GroupHarness(Harness):
    """The crash harness on the group playbook, without the random-kill calibration (kills here are exact)."""

    def __init__(self, tmp_dir: str, mode: Mode) -> None:  # no super(): no warm-up runs
        from runner import logs
        from runner.journal.db import make_engine

        logs.configure(json=True, stream=io.StringIO(), force=True)
        self.mode = mode
        self.run_id = None
        self.mutation = None
        self.in_flight = 0.0
        self.account = account_for(mode)
        self.path = f"{tmp_dir}/crash-group-{mode.value}.db"
        self.url = f"sqlite:///{self.path}"
        self.engine = make_engine(self.url)
        self.pb = _playbook(GROUP_PLAYBOOK)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[str]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=base) as path:
        yield path


def book(url: str) -> tuple[Counter[str], dict[str, str], list[str], dict[str, str]]:
    """Broker orders per step, the run's status per step, the client ids looked up, step outcomes."""
    from runner.journal.db import make_engine

    engine = make_engine(url)
    try:
        meta = sa.MetaData()
        orders = sa.Table("paper_orders", meta, autoload_with=engine)
        intents = sa.Table("order_intents", meta, autoload_with=engine)
        calls = sa.Table("broker_calls", meta, autoload_with=engine)
        steps = sa.Table("steps", meta, autoload_with=engine)
        with engine.connect() as c:
            bodies = [json.loads(b) for (b,) in c.execute(sa.select(orders.c.body))]
            step_of = {r[0]: r[1] for r in c.execute(sa.select(intents.c.client_order_id, intents.c.step_id))}
            looked = [
                cid
                for (cid,) in c.execute(
                    sa.select(calls.c.client_order_id).where(calls.c.method == "get_order")
                )
            ]
            outcomes = {r[0]: r[1] for r in c.execute(sa.select(steps.c.step_id, steps.c.outcome))}
    finally:
        engine.dispose()
    cids = [str(b.get("client_order_id") or (b.get("order") or {}).get("client_order_id")) for b in bodies]
    per_step = Counter(step_of.get(cid, f"unjournaled {cid}") for cid in cids)
    return per_step, step_of, looked, outcomes


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize(
    "die",
    [Die(1, before=False), Die(2, before=True), Die(2, before=False)],
    ids=["first-sent", "first-sent-second-not", "both-sent"],
)
def test_a_group_killed_mid_send_resumes_each_member_once(tmp: str, mode: Mode, die: Die) -> None:
    harness = GroupHarness(tmp, mode)
    try:
        assert harness.run_child(None, 0.0, die=die) is None  # killed
        sent_before, _, _, _ = book(harness.url)
        assert sum(sent_before.values()) == (1 if die.request == 1 or die.before else 2)
        # PLAIN: back past absent_after, when a lookup finds what was sent and a miss proves absence (a
        # start within the lag fails on the unknown outcome instead, by design: tests/crash/test_crash.py).
        gap = 5.0 if mode is Mode.IDEMPOTENT else 2 * ABSENT_AFTER
        assert harness.run_child(None, gap) == 0
        per_step, step_of, looked, outcomes = book(harness.url)
        assert per_step == {"a": 1, "b": 1}, per_step
        assert outcomes == {"a": "succeeded", "b": "succeeded"}, outcomes
        for step_id in sent_before:  # an order sent before the kill was found by a lookup, not re-sent
            cid = next(c for c, s in step_of.items() if s == step_id)
            assert cid in looked, (step_id, looked)
    finally:
        harness.reset()
