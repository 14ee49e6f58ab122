"""Issue 11 §4, the journal tells the broker's truth: every run, success or failure, ends by reading
back its non-terminal orders (one day-book read); reconcile revisits open intents of finished runs too;
``runner show`` labels what it did not read fresh with its as-of time. Real paper broker, SQLite file."""

from __future__ import annotations

import json
from decimal import Decimal

from helpers.engine import NIFTY_FUT, at, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.cli import main
from runner.errors import Rejected
from runner.journal.tables import RunStatus
from runner.model import OrderStatus

BID = "  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}\n"
BUY = "steps:\n  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}\n"
LATER = '  - {kind: place, id: later, instrument: fut, side: BUY, lots: 1, at: "09:17"}\n'


async def test_a_failed_run_reads_back_its_open_order_that_filled_meanwhile(tmp_path):
    env = make_env(tmp_path)
    env.prices.set(NIFTY_FUT, Decimal(23900), at(9, 16))  # crosses the bid's limit after it rested
    broker = Faulty(env.broker()).hook("place", lambda r: None)  # the bid goes through
    broker.fail("place", Rejected("insufficient margin"))  # the later step fails
    report = await env.run(playbook("steps:\n" + BID + LATER), broker=broker)
    assert report.status is RunStatus.FAILED
    (bid,) = env.journal.intents(run_id=report.run_id, step_id="bid")
    assert (bid.status, bid.filled_quantity) == (OrderStatus.FILLED, 75)
    assert broker.calls["orders"] == 1  # one day-book read for the run's open orders


async def test_a_run_with_nothing_open_reads_nothing_back(tmp_path):
    env = make_env(tmp_path)
    broker = Faulty(env.broker())
    report = await env.run(playbook(BUY), broker=broker)
    assert report.ok and broker.calls["orders"] == 0


async def test_reconcile_brings_an_open_order_of_a_finished_run_up_to_date(tmp_path):
    env = make_env(tmp_path)
    first = await env.run(playbook("steps:\n" + BID, name="a"))
    (bid,) = env.journal.intents(run_id=first.run_id)
    assert bid.status is OrderStatus.OPEN
    env.prices.set(NIFTY_FUT, Decimal(23900), at(9, 16))
    env.clock.advance(120)  # the bid fills at the broker; nobody of run "a" is there to see it
    rel = "steps:\n  - {kind: place, id: rel, instrument: rel, side: BUY, quantity: 1}\n"
    other = await env.run(playbook(rel, name="b"))  # any later start on the account
    assert other.ok
    bid = env.journal.get_intent(bid.client_order_id)  # type: ignore[assignment]
    assert (bid.status, bid.filled_quantity) == (OrderStatus.FILLED, 75)


async def test_show_labels_journal_state_with_its_as_of_time_in_the_playbooks_zone(tmp_path, capsys):
    env = make_env(tmp_path)
    first = await env.run(playbook("steps:\n" + BID))
    (bid,) = env.journal.intents(run_id=first.run_id)
    assert bid.updated_at is not None
    assert main(["show", first.run_id, "--db", env.db_url, "--json"]) == 0
    (order,) = json.loads(capsys.readouterr().out)["orders"]
    assert order["status"] == "open" and order["final"] is False  # the journal's word, not a fresh read
    assert order["as_of"] == bid.updated_at.isoformat()
    assert main(["show", first.run_id, "--db", env.db_url]) == 0
    local = bid.updated_at.astimezone(at(0, 0).tzinfo)
    assert f"open (as of {local:%Y-%m-%d %H:%M:%S} IST)" in capsys.readouterr().out
    # A terminal state is final: no as-of label.
    done = await env.run(playbook(BUY, "x"))
    assert main(["show", done.run_id, "--db", env.db_url]) == 0
    text = capsys.readouterr().out
    assert "filled" in text and "as of" not in text
