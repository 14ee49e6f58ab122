"""Shared set-up for the engine tests: a real SQLite file holding both the journal and the paper book,
a VirtualClock, deterministic prices (StepPath), and a YAML -> Playbook helper."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.matching import MatchingConfig
from runner.brokers.paper.price_paths import StepPath
from runner.clock import VirtualClock
from runner.engine.calls import Tuning
from runner.engine.core import RunOptions, RunReport, execute
from runner.engine.events import EngineEvent
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.model import Instrument
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

IST = ZoneInfo("Asia/Kolkata")
DAY = dt.date(2026, 3, 2)  # a Monday
NIFTY_FUT = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), lot_size=75, freeze_quantity=1800)
CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), None, 75)
RELIANCE = Instrument("NSE", "RELIANCE")

HEADER = """\
version: 1
name: {name}
timezone: Asia/Kolkata
instruments:
  fut: {{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, lot_size: 75, freeze_quantity: 1800}}
  ce: {{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}}
  pe: {{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24000, option_type: PE, lot_size: 75}}
  rel: {{exchange: NSE, symbol: RELIANCE}}
"""


def at(hh: int, mm: int, ss: int = 0, date: dt.date = DAY) -> dt.datetime:
    return dt.datetime(date.year, date.month, date.day, hh, mm, ss, tzinfo=IST)


def playbook(body: str, name: str = "t") -> Playbook:
    text = HEADER.format(name=name) + textwrap.dedent(body)
    return Playbook.model_validate(load_yaml(text).value)


def ce_instrument() -> Instrument:
    from runner.model import OptionType

    return Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.CE, 75)


def pe_instrument() -> Instrument:
    from runner.model import OptionType

    return Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24000), OptionType.PE, 75)


@dataclass
class Env:
    db_url: str
    engine: sa.Engine
    clock: VirtualClock
    prices: StepPath
    config: MatchingConfig
    journal: Journal
    events: list[EngineEvent] = field(default_factory=list)
    account: str = "paper"

    def broker(self, **kw: Any) -> PaperBroker:
        return PaperBroker(
            self.account,
            engine=self.engine,
            clock=self.clock,
            prices=self.prices,
            config=kw.pop("config", self.config),
        )

    async def run(
        self,
        pb: Playbook,
        *,
        broker: Any = None,
        slot: dt.datetime | None = None,
        ignore_at: bool = False,
        **opts: Any,
    ) -> RunReport:
        options = RunOptions(
            scheduled_for=slot or at(0, 0), ignore_at=ignore_at, tuning=opts.pop("tuning", Tuning()), **opts
        )
        return await execute(
            pb,
            broker or self.broker(),
            self.journal,
            self.clock,
            account=self.account,
            options=options,
            observer=self.events.append,
        )

    def steps(self, report: RunReport) -> dict[str, Any]:
        return {s.step_id: s.outcome.value for s in report.steps}


def make_env(tmp_path: Path, start: dt.datetime | None = None, **config: Any) -> Env:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    engine = make_engine(url)
    prices = StepPath()
    prices.set(NIFTY_FUT, Decimal("24500"), at(9, 0))
    prices.set(ce_instrument(), Decimal("120"), at(9, 0))
    prices.set(pe_instrument(), Decimal("95"), at(9, 0))
    prices.set(RELIANCE, Decimal("2900"), at(9, 0))
    for index, level in (("NIFTY", "24500"), ("BANKNIFTY", "52000")):  # ATM strikes of rolling instruments
        prices.set(Instrument("NSE", index), Decimal(level), at(9, 0))
    cfg = MatchingConfig(**config)
    return Env(url, engine, VirtualClock(start or at(9, 15)), prices, cfg, Journal(engine=engine))
