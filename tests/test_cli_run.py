"""`runner run`, `history` and `show` end to end through runner.cli.main on the built-in paper account."""

from __future__ import annotations

import json

from runner.cli import main

PLAYBOOK = """\
version: 1
name: cli-demo
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: "${px}"}
  - {kind: cancel, id: tidy, all_open: {}}
vars: {px: 1300}  # a resting bid under the paper market (RELIANCE ~1400)
"""


def test_run_history_show(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pb = tmp_path / "demo.yaml"
    pb.write_text(PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    assert main(["run", str(pb), "--now", "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["outcome"] for s in report["steps"]] == ["succeeded", "succeeded"]
    assert main(["history", "--db", db, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["run_id"] == report["run_id"] and run["status"] == "succeeded"
    assert main(["show", run["run_id"][:15], "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (order,) = shown["orders"]
    assert order["status"] == "cancelled" and order["transitions"] == ["pending_new->open", "open->cancelled"]


def test_invalid_playbook_exits_1(tmp_path, capsys):
    pb = tmp_path / "bad.yaml"
    pb.write_text(PLAYBOOK.replace("quantity: 1", "quantitty: 1"))
    assert main(["run", str(pb), "--db", f"sqlite:///{tmp_path / 'j.db'}"]) == 1
    assert "bad.yaml:" in capsys.readouterr().err


def test_failed_step_exits_3_and_refused_exits_4(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'j.db'}"
    bad = tmp_path / "band.yaml"
    bad.write_text(PLAYBOOK.replace("px: 1300", "px: 100").replace("cli-demo", "band"))  # outside price band
    assert main(["run", str(bad), "--now", "--db", db]) == 3
    refused = tmp_path / "refused.yaml"
    refused.write_text(PLAYBOOK.replace("cli-demo", "refused"))
    risk = tmp_path / "risk.yaml"
    risk.write_text("max_notional: 500\n")  # global limit: 1 x 1300 is over it
    assert main(["run", str(refused), "--now", "--db", db, "--risk", str(risk)]) == 4
    out = capsys.readouterr().out
    assert "refused" in out and "failed" in out
