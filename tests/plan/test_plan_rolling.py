"""Rolling instruments through the commands on the paper broker (its generated master): `plan` shows the
contract with its rule, `run` resolves and journals it, `show` prints it, `rehearse` resolves it on the
rehearsed date."""

from __future__ import annotations

import json
import re

from runner.cli import main

PLAYBOOK = """\
version: 1
name: roll-cli
timezone: Asia/Kolkata
limits: {max_orders_per_run: 5}
instruments:
  ce: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm+1, option_type: CE}
steps:
  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-5%"}}
  - {kind: cancel, id: tidy, all_open: {instruments: [ce]}}
"""
CONTRACT = re.compile(r"^NFO NIFTY (\d{4}-\d{2}-\d{2}) (\d+) CE$")


def test_plan_run_show_rehearse(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pb = tmp_path / "roll.yaml"
    pb.write_text(PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"

    assert main(["plan", str(pb), "--now", "--db", db, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    buy = plan["steps"][0]
    (call,) = [c for c in buy["calls"] if c["op"] == "place"]
    assert CONTRACT.match(call["instrument"]), call
    assert (
        f"ce = {call['instrument']} (rolling: NFO NIFTY nearest weekly atm+1 CE, NSE NIFTY LTP "
        in buy["message"]
    )

    assert main(["run", str(pb), "--now", "--ignore-calendar", "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["outcome"] for s in report["steps"]] == ["succeeded", "succeeded"]
    assert main(["show", report["run_id"], "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (order,) = shown["orders"]
    (rolled,) = shown["instruments"]
    assert rolled["instrument"] == order["instrument"] and CONTRACT.match(rolled["instrument"])
    assert order["status"] == "cancelled"  # the filter's alias named the same contract
    assert rolled["rule"] == "NFO NIFTY nearest weekly atm+1 CE" and rolled["underlying"] == "NSE NIFTY"
    assert (rolled["lot_size"], rolled["tick_size"]) == (75, "0.05")  # from the master
    assert main(["show", report["run_id"], "--db", db]) == 0
    text = capsys.readouterr().out
    assert "rolling instruments" in text and rolled["instrument"] in text

    assert main(["rehearse", str(pb), "--date", "2026-12-02", "--db", f"sqlite:///{tmp_path / 'r.db'}"]) == 0
    out = "".join(capsys.readouterr())  # the timeline (with the resolution note) and the summary
    # 2026-12-02 is a Wednesday: the nearest NSE weekly is Tuesday 2026-12-08
    assert re.search(
        r"ce = NFO NIFTY 2026-12-08 \d+ CE \(rolling: NFO NIFTY nearest weekly atm\+1 CE", out
    ), out


async def test_apply_refuses_an_order_whose_contract_moved_since_the_plan(tmp_path):
    """The plan names the contract resolved at plan time; if the step resolves another one at apply time
    (the underlying moved a strike), the plan's guard refuses the order: nothing is sent."""
    import datetime as dt
    from decimal import Decimal

    from helpers.engine import at, make_env
    from helpers.rolling import INDEX, WithMaster, nifty_master

    from runner.model import Instrument as Ins
    from runner.model import OptionType
    from runner.plan.apply import apply_plan
    from runner.plan.model import PlaybookSource
    from runner.plan.planner import make_plan
    from runner.playbook.models import Playbook
    from runner.playbook.yamlload import load_yaml

    env = make_env(tmp_path)  # Monday 2026-03-02
    env.prices.set(INDEX, Decimal("24512"), at(9, 0))  # ATM 24500, atm+1 = 24550
    for strike in (24550, 24600):
        env.prices.set(
            Ins("NFO", "NIFTY", dt.date(2026, 3, 3), Decimal(strike), OptionType.CE), Decimal(90), at(9, 0)
        )
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    plan = await make_plan(
        pb,
        PlaybookSource("roll.yaml", PLAYBOOK),
        WithMaster(env.broker(), nifty_master()),
        env.journal,
        account=env.account,
        now=env.clock.now(),
        scheduled_for=at(0, 0),
        ignore_at=True,
    )
    (call,) = [c for c in plan.calls if c.op.value == "place"]
    assert call.instrument == "NFO NIFTY 2026-03-03 24550 CE"
    env.prices.set(INDEX, Decimal("24561"), at(9, 16))  # ATM now 24550: atm+1 = 24600
    await env.clock.sleep_until(at(9, 17))
    report = await apply_plan(plan, pb, WithMaster(env.broker(), nifty_master()), env.journal, env.clock)
    assert report.steps[0].outcome.value == "failed"
    assert (
        "instrument NFO NIFTY 2026-03-03 24600 CE differs from the planned NFO NIFTY 2026-03-03 24550 CE"
        in (report.steps[0].message)
    )
    assert await env.broker().orders() == []
