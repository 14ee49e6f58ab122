"""``runner plan``, ``runner rehearse`` and ``runner show`` present a ``parallel`` group: a row for the
group (id, timing) with its members indented under it; in JSON a ``group`` key on each member."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.cli import EXIT_OK, main
from runner.plan.groups import GroupLabel, nest

PLAYBOOK = """\
version: 1
name: groups-demo
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: first, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1300}
  - kind: parallel
    id: both
    at: "09:20"
    steps:
      - {kind: place, id: a, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1290}
      - {kind: place, id: b, after: 10s, instrument: rel, side: BUY, quantity: 2, type: LIMIT, price: 1280}
  - {kind: cancel, id: tidy, all_open: {}}
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for var in ("RUNNER_ACCOUNTS", "RUNNER_RISK", "RUNNER_DB", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    monkeypatch.setenv("RUNNER_DB", db)
    return db


def _rows(text: str, first: str, last: str) -> list[str]:
    """The table lines from the row of step ``first`` to that of ``last``, stripped on the right."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.split() and ln.split()[0] == first)
    end = next(i for i, ln in enumerate(lines) if ln.split() and ln.split()[0] == last and i > start)
    return lines[start : end + 1]


def _assert_nested(rows: list[str], timing: str) -> None:
    first, group, a, b, tidy = rows
    column = first.index("first")
    assert group[column:].startswith("both") and "parallel" in group and timing in group, group
    assert a[column:].startswith("  a ") and b[column:].startswith("  b "), (a, b)
    assert tidy[column:].startswith("tidy"), tidy


def test_nest_puts_a_row_for_the_group_before_its_indented_members() -> None:
    label = GroupLabel("both", "at 09:20")
    rows = [("first", "place", "x"), ("a", "place", "y"), ("b", "wait", "z"), ("tidy", "cancel", "w")]
    assert nest(rows, [None, label, label, None], timing_col=2) == [
        ("first", "place", "x"),
        ("both", "parallel", "at 09:20"),
        ("  a", "place", "y"),
        ("  b", "wait", "z"),
        ("tidy", "cancel", "w"),
    ]


def test_plan_shows_the_group_and_its_members(ws: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", "pb.yaml"])
    text = capsys.readouterr().out
    _assert_nested(_rows(text, "first", "tidy"), "at 09:20")
    assert "10s after the group starts" in text  # a member's after counts from the group's start
    main(["plan", "pb.yaml", "--json"])
    steps = {s["id"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    assert steps["a"]["group"] == steps["b"]["group"] == {"id": "both", "timing": "at 09:20"}
    assert "group" not in steps["first"] and "group" not in steps["tidy"]


def test_plan_file_keeps_the_group(ws: str, tmp_path: Path) -> None:
    from runner.plan.model import plan_from_dict

    main(["plan", "pb.yaml", "--out", "p.json", "--json"])
    plan = plan_from_dict(json.loads((tmp_path / "p.json").read_text()))
    label = GroupLabel("both", "at 09:20")
    assert [s.group for s in plan.steps] == [None, label, label, None]


def test_rehearse_and_show_nest_the_members(ws: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rehearse", "pb.yaml", "--date", "2026-12-01", "--db", os.environ["RUNNER_DB"]]
    assert main(args) == EXIT_OK
    _assert_nested(_rows(capsys.readouterr().out, "first", "tidy"), "at 09:20")
    assert main([*args, "--json"]) == EXIT_OK
    steps = {s["id"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    assert steps["b"]["group"] == {"id": "both", "timing": "at 09:20"} and "group" not in steps["first"]
    assert main(["history", "--json"]) == EXIT_OK
    run_id = json.loads(capsys.readouterr().out)[0]["run_id"]
    assert main(["show", run_id]) == EXIT_OK
    _assert_nested(_rows(capsys.readouterr().out, "first", "tidy"), "started 2026-12-01 09:20:00 IST")
    assert main(["show", run_id, "--json"]) == EXIT_OK
    steps = {s["id"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    started = {"id": "both", "started_at": "2026-12-01T03:50:00+00:00"}  # ISO, with the offset
    assert steps["a"]["group"] == steps["b"]["group"] == started
    assert "group" not in steps["tidy"]
