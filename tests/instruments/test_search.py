"""Search: the inverted index answers exactly what a linear scan does."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.instruments.search import SearchIndex, linear_search
from runner.model import Instrument, OptionType

E1, E2 = dt.date(2027, 1, 26), dt.date(2027, 2, 23)


def master() -> InstrumentMaster:
    rows = [MasterRow(Instrument("NSE", "RELIANCE", lot_size=1), "2885", "RELIANCE-EQ")]
    token = 1000
    for sym in ("NIFTY", "BANKNIFTY"):
        for e in (E1, E2):
            for strike in range(24000, 25000, 500):
                for opt in OptionType:
                    token += 1
                    ts = f"{sym}{e:%y%b}{strike}{opt.value}".upper()
                    rows.append(
                        MasterRow(Instrument("NFO", sym, e, Decimal(strike), opt, 75), str(token), ts)
                    )
    return InstrumentMaster(rows)


QUERIES = [
    ["NIFTY", "24500", "CE"],
    ["nifty", "24500.00", "ce"],  # case and a decimal strike
    ["BANK"],  # no exact value: inside symbols
    ["27JAN24500"],  # inside trading symbols
    ["2027-02-23", "PE"],
    ["2885"],
    ["NSE"],
    ["NIFTY", "99999"],
    [],
]


@pytest.mark.parametrize("terms", QUERIES)
def test_index_agrees_with_a_linear_scan(terms: list[str]) -> None:
    m = master()
    assert SearchIndex(m).search(terms, limit=None) == linear_search(m, terms, limit=None)


def test_exact_symbol_does_not_match_longer_symbols() -> None:
    found = SearchIndex(master()).search(["NIFTY", "24500", "CE"], expiry=E1)
    assert [(r.instrument.symbol, r.instrument.expiry) for r in found] == [("NIFTY", E1)]


def test_limit_and_order() -> None:
    found = SearchIndex(master()).search(["NIFTY"], limit=3)
    assert [(r.instrument.expiry, r.instrument.strike, r.instrument.option_type) for r in found] == [
        (E1, Decimal(24000), OptionType.CE),
        (E1, Decimal(24000), OptionType.PE),
        (E1, Decimal(24500), OptionType.CE),
    ]
