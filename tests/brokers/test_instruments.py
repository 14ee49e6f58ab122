import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from runner.brokers.instruments import InstrumentMaster
from runner.errors import InstrumentUnknown
from runner.model import Instrument, OptionType

CSV = """exchange,symbol,expiry,strike,option_type,lot_size,tick_size,freeze_quantity,token,\
trading_symbol,instrument_id
NFO,NIFTY,2026-12-29,24500,CE,75,0.05,1800,43210,NIFTY26D2924500CE,9001
NSE,RELIANCE,,,,1,0.10,,2885,RELIANCE-EQ,17
"""


def test_resolves_neutral_instruments_to_broker_ids(tmp_path: Path) -> None:
    path = tmp_path / "master.csv"
    path.write_text(CSV)
    master = InstrumentMaster.load(path, broker="blitz")
    row = master.resolve(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal("24500.0"), OptionType.CE))
    ids = (row.token, row.trading_symbol, row.extra["instrument_id"])
    assert ids == ("43210", "NIFTY26D2924500CE", "9001")
    assert row.instrument.lot_size == 75 and row.instrument.freeze_quantity == 1800
    assert master.by_token("2885").instrument.symbol == "RELIANCE"


def test_unknown_instrument_is_a_clear_error() -> None:
    with pytest.raises(InstrumentUnknown, match="NSE INFY"):
        InstrumentMaster([], broker="odin").resolve(Instrument("NSE", "INFY"))
