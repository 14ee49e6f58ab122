"""`plan` shows a rolling ATM whose underlying's LTP is far outside the listed strikes as a failed step,
nothing planned to be sent; a run fails the step the same way (the alias, the LTP, the range)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from helpers.engine import at, make_env
from helpers.rolling import INDEX, WithMaster, nifty_master

from runner.engine.core import RunOptions, execute
from runner.plan.model import PlaybookSource
from runner.plan.planner import make_plan
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

PLAYBOOK = """\
version: 1
name: roll-far
timezone: Asia/Kolkata
instruments:
  ce: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm, option_type: CE}
steps:
  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: MARKET}
"""
FAR = "instrument 'ce' (NFO NIFTY nearest weekly atm CE): the underlying's LTP 30000"
RANGE = "above the listed strikes 24300..24700"


async def test_plan_fails_the_step(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.prices.set(INDEX, Decimal("30000"), at(9, 0))  # the master lists 24300..24700
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    plan = await make_plan(
        pb, PlaybookSource("roll.yaml", PLAYBOOK), WithMaster(env.broker(), nifty_master()), env.journal,
        account=env.account, now=env.clock.now(), scheduled_for=at(0, 0), ignore_at=True,
    )
    (step,) = plan.steps
    assert step.verdict.value == "fails", step
    assert FAR in step.message and RANGE in step.message, step.message
    assert [c for c in plan.calls if c.op.value == "place"] == []


async def test_run_fails_the_step_and_sends_nothing(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.prices.set(INDEX, Decimal("30000"), at(9, 0))
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    broker = WithMaster(env.broker(), nifty_master())
    report = await execute(pb, broker, env.journal, env.clock, account=env.account,
                           options=RunOptions(scheduled_for=at(0, 0), mode="now", ignore_at=True))
    (step,) = report.steps
    assert step.outcome.value == "failed" and FAR in step.message and RANGE in step.message
    assert "nothing was sent" in step.message
    assert await env.broker().orders() == []
