"""The run view (issue 14 §2, issue 15): each order's price history and the run's P&L, rendered by
``runner show`` (text and --json)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from helpers.engine import NIFTY_FUT, at, make_env, playbook

from runner.cli import main

CHASED = """
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
  - {kind: modify, id: c, order: bid, chase: {tick: 5, every: 2s, max: 2, then_market: true}}
"""


async def _chased_run(tmp_path):
    env = make_env(tmp_path)
    env.prices.set(NIFTY_FUT, Decimal("24100"), at(9, 15))  # the chase never meets it: market fills it
    report = await env.run(playbook(CHASED))
    return env, report.run_id


async def test_show_says_why_a_chased_buy_filled_above_its_limit(
    tmp_path, capsys: pytest.CaptureFixture[str]
):
    env, run_id = await _chased_run(tmp_path)
    assert main(["show", run_id, "--db", env.db_url]) == 0
    text = capsys.readouterr().out
    history = text[text.index("price history:") :]
    lines = [ln.strip() for ln in history.splitlines()]
    assert any(ln.startswith("placed LIMIT 24000 at ") and ln.endswith(" IST") for ln in lines), history
    assert any(ln.startswith("chase 1 24005 at 2026-") for ln in lines), history
    assert any(ln.startswith("chase 2 24010 at ") for ln in lines), history
    assert any(ln.startswith("to MARKET at ") for ln in lines), history
    assert any(ln.startswith("filled 75 @ 24100 at ") for ln in lines), history
    order = [ln for ln in lines if ln.startswith(("placed", "chase", "to MARKET", "filled"))]
    assert [ln.split(" at ")[0] for ln in order] == [
        "placed LIMIT 24000",
        "chase 1 24005",
        "chase 2 24010",
        "to MARKET",
        "filled 75 @ 24100",
    ]
    assert "P&L realised by the run: n/a" in text  # a BUY alone realises nothing: never 0


async def test_show_json_carries_the_history_with_offsets(tmp_path, capsys: pytest.CaptureFixture[str]):
    env, run_id = await _chased_run(tmp_path)
    assert main(["show", run_id, "--db", env.db_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (order,) = data["orders"]
    whats = [(h["what"], h["chase_step"], h["price"]) for h in order["history"]]
    assert whats == [
        ("placed", None, "24000"),
        ("chase", 1, "24005"),
        ("chase", 2, "24010"),
        ("to_market", None, None),
        ("fill", None, "24100"),
        ("status", None, None),
    ]
    assert all(h["at"].endswith("+00:00") for h in order["history"])
    assert data["pnl"]["realised"] is None
    assert data["pnl"]["instruments"][0]["open_quantity"] == 75


async def test_pnl_of_fills_that_net(tmp_path, capsys: pytest.CaptureFixture[str]):
    env = make_env(tmp_path)
    env.prices.set(NIFTY_FUT, Decimal("24010.5"), at(9, 15, 30))
    report = await env.run(
        playbook("""
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 2}
  - {kind: wait, id: w, until: "09:16"}
  - {kind: place, id: sell, instrument: fut, side: SELL, lots: 1}
""")
    )
    assert main(["show", report.run_id, "--db", env.db_url, "--json"]) == 0
    pnl = json.loads(capsys.readouterr().out)["pnl"]
    # bought 150 @ 24500 (the price at 09:00), sold 75 @ 24010.5: (24010.5 - 24500) * 75
    assert pnl["realised"] == str((Decimal("24010.5") - Decimal("24500")) * 75)
    assert pnl["instruments"][0]["open_quantity"] == 75


async def test_the_status_pages_run_page_renders_the_same_view(tmp_path) -> None:
    """The run page (runner/web/pages.py) shows each order's price history and the run's P&L from the
    view `runner show` prints: one definition."""
    from runner.commands.show import collect
    from runner.journal.store import Journal
    from runner.web.pages import render_run

    env, run_id = await _chased_run(tmp_path)
    html = render_run(collect(Journal(env.db_url), run_id))
    for text in ("placed LIMIT 24000", "chase 1 24005", "chase 2 24010", "to MARKET", "filled 75 @ 24100"):
        assert text in html, text
    pnl = html[html.index('id="pnl"') :]
    assert "realised: <b>n/a</b>" in pnl and "left open by the run" in pnl
