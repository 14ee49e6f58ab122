"""Issue 11 §5: AlphaPoint carries our client id as a numeric one-way hash; the way back lives in the
adapter's memory. After a restart the engine hands the adapter the journal's client ids of the account
(a generic broker hook, :class:`runner.brokers.base.ClientIdRegistry`), so our resting orders are ours
again and ``this_run_only`` filters see them. Engine, real SQLite journal, the APEX simulator over real
WebSockets."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers.faulty_broker import Faulty
from test_alphapoint import START, account, clock, creds, prices, sim, sim_factory  # noqa: F401

from runner.brokers.alphapoint.client import AlphaPointBroker, create
from runner.brokers.alphapoint.sim import AlphaPointSim
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, execute
from runner.engine.killswitch import ControlState, ControlView, GuardedBroker, Mode
from runner.journal.store import Journal
from runner.journal.tables import StepOutcome
from runner.model import OrderStatus
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

PLAYBOOK = textwrap.dedent("""\
    version: 1
    name: ap-stop
    timezone: Asia/Kolkata
    instruments:
      rel: {exchange: NSE, symbol: RELIANCE}
    steps:
      - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 5, type: LIMIT, price: 990}
      - {kind: cancel, id: c, all_open: {this_run_only: true}}
""")


class Killed(BaseException):
    """The process dies here."""


@pytest.fixture
async def brokers(sim: AlphaPointSim) -> AsyncIterator[list[AlphaPointBroker]]:  # noqa: F811
    made: list[AlphaPointBroker] = []
    yield made
    for b in made:
        await b.close()


async def _run(journal: Journal, clock: VirtualClock, broker: Any) -> Any:  # noqa: F811
    pb = Playbook.model_validate(load_yaml(PLAYBOOK).value)
    return await execute(
        pb, broker, journal, clock, account="ap", options=RunOptions(scheduled_for=START, ignore_at=True)
    )


@pytest.mark.parametrize("guarded", [False, True])
async def test_a_resumed_run_still_knows_its_resting_order_after_a_restart(
    tmp_path: Any,
    sim: AlphaPointSim,  # noqa: F811
    clock: VirtualClock,  # noqa: F811
    brokers: list[AlphaPointBroker],
    guarded: bool,
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    first = create(account(sim.url))
    brokers.append(first)
    dying = Faulty(first).fail("cancel", Killed())  # the process dies as the cancel step starts cancelling
    with pytest.raises(Killed):
        await _run(journal, clock, dying)
    (bid,) = journal.intents(step_id="bid")
    assert bid.status is OrderStatus.OPEN
    # A new process: a fresh adapter, whose memory holds none of our numeric ids.
    fresh = create(account(sim.url))
    brokers.append(fresh)
    broker: Any = fresh
    if guarded:  # through the kill switch's wrapper, as `runner run` and the daemon use it
        broker = GuardedBroker(fresh, ControlView(ControlState(mode=Mode.NORMAL, reason="", since=START)))
    report = await _run(journal, clock, broker)
    assert report.resumed
    assert {s.step_id: s.outcome for s in report.steps}["c"] is StepOutcome.SUCCEEDED
    assert [o for o in await fresh.open_orders()] == []  # the stop is not left working
    (bid,) = journal.intents(step_id="bid")
    assert bid.status is OrderStatus.CANCELLED
