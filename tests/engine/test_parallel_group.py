"""``parallel`` groups (issue 15): members run at once, each labelled with its own step; the group ends
when all end; a failed member leaves its siblings running; after/at count from the group's start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runner.journal.tables import RunStatus
from tests.helpers.engine import at, make_env, playbook

GROUP = """\
steps:
  - kind: parallel
    id: both
    at: "09:20"
    steps:
      - {kind: place, id: a, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 2800, product: MIS}
      - {kind: place, id: b, after: 10s, instrument: rel, side: BUY, quantity: 2, type: LIMIT, price: 2790,
         product: MIS}
  - {kind: wait, id: w, order: a, status: [open], timeout: 30s}
"""


def test_members_run_at_once_from_the_group_start(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    pb = playbook(GROUP)
    report = asyncio.run(env.run(pb, slot=at(9, 20)))
    assert env.steps(report) == {"a": "succeeded", "b": "succeeded", "w": "succeeded"}
    started = {s.step_id: s.started_at for s in report.steps}
    assert started["a"] == at(9, 20)
    assert started["b"] == at(9, 20, 10)  # after: counts from the group's start, not from a's end
    intents = {i.step_id for i in env.journal.intents(run_id=report.run_id)}
    assert intents == {"a", "b"}
    for call in env.journal.calls(run_id=report.run_id):
        if call["method"] == "place":
            assert call["step_id"] in ("a", "b")


FAILING_MEMBER = """\
limits: {max_lots_per_order: 1}
steps:
  - kind: parallel
    id: both
    steps:
      - {kind: place, id: big, instrument: fut, side: BUY, lots: 2, type: LIMIT, price: 24000}
      - {kind: wait, id: slow, until: "09:30"}
  - {kind: place, id: after_group, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 2800}
  - {kind: cancel, id: exit, all_open: {}}
"""


def test_a_refused_member_leaves_its_sibling_running_then_blocks_the_run(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    report = asyncio.run(env.run(playbook(FAILING_MEMBER), slot=at(9, 15)))
    steps = env.steps(report)
    assert steps["big"] == "refused"
    assert steps["slow"] == "succeeded"  # not cancelled by its sibling's refusal
    finished = {s.step_id: s.finished_at for s in report.steps}
    assert finished["slow"] == at(9, 30)
    assert steps["after_group"] == "skipped"
    assert steps["exit"] == "succeeded"  # exit steps still run
    assert report.status is RunStatus.REFUSED
