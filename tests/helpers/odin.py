"""Shared pieces of the ODIN tests: the fixture master, the simulator's quiet matching engine, its clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import RandomWalk
from runner.model import Instrument

FIXTURES = Path(__file__).parents[1] / "brokers" / "odin" / "fixtures"
MASTER = InstrumentMaster.load(FIXTURES / "master.csv", broker="odin")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST)
IDEA = Instrument("NSE", "IDEA")


def engine() -> MatchingEngine:
    """A seeded random walk with no session close: prices move, the book never closes mid-test."""
    return MatchingEngine(RandomWalk(seed=7), MatchingConfig(session_close=None))
