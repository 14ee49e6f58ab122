"""A daemon builds one Kotak Neo broker per account over one shared master: the master's segment and
symbol indexes are built once per master, not once per account (100 accounts indexed a 13,000-row
master 100 times on the loop while preparing, ~2 s, and claim leases lapsed)."""

from __future__ import annotations

from typing import Any

import pytest

from runner.accounts import Account
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo import client as kotak
from runner.model import Instrument


def master(rows: int) -> InstrumentMaster:
    return InstrumentMaster(
        [MasterRow(Instrument("NSE", f"SYM{i}"), str(1000 + i), f"SYM{i}-EQ")
         for i in range(rows)],
        broker="kotak_neo",
    )  # fmt: skip


def account(i: int) -> Account:
    return Account(name=f"acct{i}", broker="kotak_neo")


def test_brokers_over_one_master_index_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    indexed = 0
    real = kotak.segment_for

    def counting(row: Any) -> str:
        nonlocal indexed
        indexed += 1
        return real(row)

    monkeypatch.setattr(kotak, "segment_for", counting)
    shared = master(50)
    brokers = [kotak.KotakNeo(account(i), master=shared) for i in range(10)]
    assert indexed == 50
    for b in brokers:
        assert b._lookup("nse_cm", "1007", None) == Instrument("NSE", "SYM7")
        assert b._lookup("nse_cm", None, "sym8-eq") == Instrument("NSE", "SYM8")
    other = master(3)
    kotak.KotakNeo(account(99), master=other)  # another master: its own index
    assert indexed == 53
    shared.add(MasterRow(Instrument("NSE", "NEW"), "9999", "NEW-EQ"))
    grown = kotak.KotakNeo(account(100), master=shared)  # grown since: indexed again, the new row in it
    assert indexed == 53 + 51
    assert grown._lookup("nse_cm", "9999", None) == Instrument("NSE", "NEW")
