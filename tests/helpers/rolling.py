"""A test instrument master for rolling instruments (NIFTY weeklies of March 2026, strikes 24300-24700)
and a broker wrapper that serves it (or none)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from runner.brokers.base import ForwardingBroker
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.model import Instrument, OptionType

WEEKLIES = [dt.date(2026, 3, d) for d in (3, 10, 17, 24, 31)] + [dt.date(2026, 4, 28)]
STRIKES = [Decimal(s) for s in range(24300, 24750, 50)]
INDEX = Instrument("NSE", "NIFTY")


def nifty_master() -> InstrumentMaster:
    rows = [MasterRow(INDEX, token="26000")]
    for expiry in WEEKLIES:
        if expiry.day > 24:  # the month's last: a future too
            rows.append(MasterRow(Instrument("NFO", "NIFTY", expiry, lot_size=75, tick_size=Decimal("0.1"))))
        for strike in STRIKES:
            for opt in OptionType:
                ins = Instrument("NFO", "NIFTY", expiry, strike, opt, 75, Decimal("0.05"), 1800)
                rows.append(MasterRow(ins, token=f"{expiry:%m%d}{strike}{opt.value}"))
    return InstrumentMaster(rows, broker="paper")


class WithMaster(ForwardingBroker):
    def __init__(self, inner: Any, master: InstrumentMaster | None) -> None:
        super().__init__(inner)
        self.master = master
        self.master_reads = 0

    async def instrument_master(self) -> InstrumentMaster | None:
        self.master_reads += 1
        return self.master
