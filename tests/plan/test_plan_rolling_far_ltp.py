"""A rolling ATM whose underlying's LTP is beyond the listed strikes by more than one strike interval:
`plan` shows the step REFUSED, nothing planned to be sent; a run refuses the step the same way (the
underlying, the LTP, the band, what to check), nothing sent; `rehearse` says the same, exit 4."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers.engine import at, make_env
from helpers.rolling import INDEX, WithMaster, nifty_master

from runner.cli import EXIT_REFUSED, main
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
FAR = "instrument 'ce' (NFO NIFTY nearest weekly atm CE): the underlying NSE NIFTY LTP"
RANGE = "the listed strikes 24300..24700"


async def _planned(tmp_path: Path, ltp: str) -> tuple[Any, Any]:
    """The playbook planned with the underlying at ``ltp``: the plan and its one step."""
    env = make_env(tmp_path)
    env.prices.set(INDEX, Decimal(ltp), at(9, 0))
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    plan = await make_plan(
        pb, PlaybookSource("roll.yaml", PLAYBOOK), WithMaster(env.broker(), nifty_master()), env.journal,
        account=env.account, now=env.clock.now(), scheduled_for=at(0, 0), ignore_at=True,
    )
    (step,) = plan.steps
    return plan, step


@pytest.mark.parametrize(("ltp", "side"), [("30000", "above"), ("24750.05", "above"), ("24249", "below")])
async def test_plan_refuses_the_step(tmp_path: Path, ltp: str, side: str) -> None:
    plan, step = await _planned(tmp_path, ltp)  # the master lists 24300..24700 in steps of 50
    assert step.verdict.value == "refused", step
    assert f"{FAR} {ltp}" in step.message and f"{side} {RANGE}" in step.message, step.message
    assert [c for c in plan.calls if c.op.value == "place"] == []


async def test_one_interval_out_still_resolves_to_the_edge(tmp_path: Path) -> None:
    _, step = await _planned(tmp_path, "24750")
    assert step.verdict.value == "planned", step
    assert "ce = NFO NIFTY 2026-03-03 24700 CE (rolling" in step.message, step.message


async def test_run_refuses_the_step_and_sends_nothing(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.prices.set(INDEX, Decimal("30000"), at(9, 0))
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    broker = WithMaster(env.broker(), nifty_master())
    report = await execute(pb, broker, env.journal, env.clock, account=env.account,
                           options=RunOptions(scheduled_for=at(0, 0), mode="now", ignore_at=True))
    (step,) = report.steps
    assert step.outcome.value == "refused", step
    assert FAR in step.message and RANGE in step.message and "nothing was sent" in step.message
    assert report.status.value == "refused"
    assert await env.broker().orders() == []


WRONG_UNDERLYING = """\
version: 1
name: roll-wrong-underlying
timezone: Asia/Kolkata
instruments:
  ce:
    exchange: NFO
    symbol: NIFTY
    expiry: {nearest: weekly}
    strike: atm
    option_type: CE
    underlying: {exchange: NSE, symbol: BANKNIFTY}
steps:
  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: MARKET}
"""


def test_rehearse_and_plan_say_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the paper broker: NIFTY options priced off BANKNIFTY (the wrong underlying) are refused."""
    monkeypatch.chdir(tmp_path)
    pb = tmp_path / "wrong.yaml"
    pb.write_text(WRONG_UNDERLYING)
    argv = ["rehearse", str(pb), "--date", "2026-12-02", "--db", f"sqlite:///{tmp_path / 'r.db'}"]
    assert main(argv) == EXIT_REFUSED
    out = "".join(capsys.readouterr())
    assert "the underlying NSE BANKNIFTY LTP" in out and "above the listed strikes" in out, out
    assert "check the underlying" in out
    assert main(["plan", str(pb), "--now", "--db", f"sqlite:///{tmp_path / 'p.db'}"]) == EXIT_REFUSED
    out = "".join(capsys.readouterr())
    assert "the underlying NSE BANKNIFTY LTP" in out and " refused " in out, out
