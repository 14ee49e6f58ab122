"""The anomaly checks as pure functions, and the instruments playbooks name (``used``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.instruments import checks
from runner.instruments.checks import Reason
from runner.instruments.used import instruments_in
from runner.model import Instrument, OptionType

TODAY = dt.date(2027, 1, 4)
CE = Instrument("NFO", "NIFTY", dt.date(2027, 1, 26), Decimal(24500), OptionType.CE)


def master(lot: int = 75, tick: str = "0.05", freeze: int = 1800, with_ce: bool = True) -> InstrumentMaster:
    rows = [MasterRow(Instrument("NSE", "RELIANCE", lot_size=1))]
    if with_ce:
        rows.append(
            MasterRow(
                Instrument(
                    CE.exchange, CE.symbol, CE.expiry, CE.strike, CE.option_type, lot, Decimal(tick), freeze
                )
            )
        )
    return InstrumentMaster(rows)


def reasons(anomalies: list[checks.Anomaly]) -> list[Reason]:
    return [a.reason for a in anomalies]


def test_rows() -> None:
    assert reasons(checks.check_rows(0, {"a.csv": 0})) == [Reason.NO_ROWS]
    assert reasons(checks.check_rows(10, {"a.csv": 10, "b.csv": 0})) == [Reason.FILE_EMPTY]
    assert checks.check_rows(10, {"a.csv": 10}) == []


def test_collapse_threshold() -> None:
    assert checks.check_collapse(50, 100) == []  # exactly the threshold is fine
    assert reasons(checks.check_collapse(49, 100)) == [Reason.ROW_COUNT_COLLAPSE]
    assert checks.check_collapse(10, None) == []  # a first sync has nothing to compare with
    assert checks.check_collapse(80, 100, ratio=0.9) != []


def test_expiries() -> None:
    rows = list(master())
    assert checks.check_expiries(rows, TODAY) == []
    assert checks.check_expiries(rows, CE.expiry) == []  # expiring today is still live
    assert reasons(checks.check_expiries(rows, CE.expiry + dt.timedelta(days=1))) == [Reason.EXPIRIES_PAST]
    assert checks.check_expiries(list(master(with_ce=False)), TODAY) == []  # no dated contract at all


def test_files() -> None:
    assert checks.check_files(["a.csv"], None) == []
    got = checks.check_files(["a.csv"], ["a.csv", "b.csv"])
    assert reasons(got) == [Reason.FILE_MISSING] and "renamed" not in got[0].message


def test_playbook_instruments() -> None:
    used = [Instrument(CE.exchange, CE.symbol, CE.expiry, CE.strike, CE.option_type, lot_size=75)]
    assert checks.check_playbook_instruments(master(), master(), used, TODAY) == []
    got = checks.check_playbook_instruments(master(lot=65, tick="0.1"), master(), used, TODAY)
    assert [a.message.split(": ", 1)[1] for a in got] == [
        "lot_size 75 -> 65 (used by a playbook)",
        "tick_size 0.05 -> 0.1 (used by a playbook)",
    ]
    gone = checks.check_playbook_instruments(master(with_ce=False), master(), used, TODAY)
    assert reasons(gone) == [Reason.INSTRUMENT_MISSING]
    assert checks.check_playbook_instruments(master(with_ce=False), master(), used, dt.date(2027, 2, 1)) == []
    assert checks.check_playbook_instruments(master(lot=65), None, used, TODAY) == []


def test_instruments_named_by_playbooks(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "version: 1\nname: a\naccount: paper\ntimezone: Asia/Kolkata\n"
        "instruments:\n"
        "  ce: {exchange: NFO, symbol: NIFTY, expiry: 2027-01-26, strike: 24500, option_type: CE}\n"
        "steps:\n"
        "  - {kind: place, id: a, instrument: ce, side: BUY, quantity: 75, type: LIMIT, price: 100}\n"
        "  - {kind: place, id: b, instrument: {exchange: NSE, symbol: RELIANCE}, side: BUY, quantity: 1,"
        " type: LIMIT, price: 2800}\n"
    )
    got = sorted(i.key for i in instruments_in([tmp_path]))
    assert got == ["NFO NIFTY 2027-01-26 24500 CE", "NSE RELIANCE"]
