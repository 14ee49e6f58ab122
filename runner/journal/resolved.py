"""``resolved_instruments``: the concrete contract each rolling instrument of a run resolved to.

A rolling alias (``expiry: {nearest: weekly}``, ``strike: atm+1``) is resolved once, when the run's first
step using it runs (:mod:`runner.engine.rolling`), and the contract is journaled here before any order on it
is sent. A resumed run, ``runner show`` and ``runner apply`` read it back; nothing re-resolves it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import UTCDateTime, create_all
from runner.journal.tables import DecimalText
from runner.model import Instrument, instrument_from_dict, instrument_to_dict

metadata = sa.MetaData()

resolved_instruments = sa.Table(
    "resolved_instruments",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("instrument_key", sa.String(120), nullable=False),  # e.g. "NFO NIFTY 2026-12-08 24500 CE"
    sa.Column("instrument", sa.Text, nullable=False),  # JSON, with the master's lot/tick/freeze
    sa.Column("rule", sa.String(200), nullable=False),  # e.g. "NFO NIFTY nearest weekly atm+1 CE"
    sa.Column("underlying", sa.String(120)),  # whose LTP set the strike (None: no atm strike)
    sa.Column("underlying_ltp", DecimalText()),
    sa.Column("resolved_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True, slots=True)
class ResolvedInstrument:
    run_id: str
    alias: str
    instrument: Instrument
    rule: str
    underlying: str | None
    underlying_ltp: Decimal | None
    resolved_at: dt.datetime


class ResolvedInstruments:
    """The ``resolved_instruments`` rows of one journal database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_all(engine, metadata)

    def record(self, row: ResolvedInstrument) -> ResolvedInstrument:
        """Journal ``row``; if the alias was already resolved for the run (another process got there
        first), the journaled one wins and is returned."""
        values = {
            "run_id": row.run_id,
            "alias": row.alias,
            "instrument_key": row.instrument.key,
            "instrument": json.dumps(instrument_to_dict(row.instrument), sort_keys=True),
            "rule": row.rule,
            "underlying": row.underlying,
            "underlying_ltp": row.underlying_ltp,
            "resolved_at": row.resolved_at,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(resolved_instruments.insert().values(**values))
        except sa.exc.IntegrityError:
            existing = self.of_run(row.run_id).get(row.alias)
            if existing is None:
                raise
            return existing
        return row

    def of_run(self, run_id: str) -> dict[str, ResolvedInstrument]:
        """Alias -> its journaled contract, for one run."""
        t = resolved_instruments
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.resolved_at)).all()
        return {
            r.alias: ResolvedInstrument(
                r.run_id,
                r.alias,
                instrument_from_dict(json.loads(r.instrument)),
                r.rule,
                r.underlying,
                r.underlying_ltp,
                r.resolved_at,
            )
            for r in rows
        }
