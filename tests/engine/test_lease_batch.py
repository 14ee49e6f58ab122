"""Issue 16: the shared account leases of fires taken over (prepared at their instant, off the loop) are
taken per account in one transaction, not one after another per fire; a conflicting holder sends each
back to the ordinary take, which judges it (busy while alive, taken over once dead)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from runner.clock import VirtualClock
from runner.engine.leases import AccountLeases, Lease, LeaseMode
from runner.journal.db import make_engine

NOW = dt.datetime(2026, 12, 7, 3, 45, tzinfo=dt.UTC)


def _leases(tmp_path: Path) -> AccountLeases:
    return AccountLeases(make_engine(f"sqlite:///{tmp_path / 'j.db'}"))


def test_shared_leases_of_one_account_are_taken_together(tmp_path: Path) -> None:
    leases = _leases(tmp_path)
    got = leases.try_acquire_shared("acct", [("r1", "bid"), ("r2", "bid"), ("r3", "bid")])
    assert all(isinstance(v, Lease) and v.mode is LeaseMode.SHARED for v in got.values())
    assert sorted(r.run_id for r in leases.holders("acct")) == ["r1", "r2", "r3"]
    assert len({r.acquired_at for r in leases.holders("acct")}) == 3  # each its own compare-and-set key


def test_a_live_exclusive_holder_leaves_each_busy(tmp_path: Path) -> None:
    leases = _leases(tmp_path)
    assert isinstance(leases.try_acquire("acct", "squaring", LeaseMode.EXCLUSIVE, "sq"), Lease)
    got = leases.try_acquire_shared("acct", [("r1", "bid"), ("r2", "bid")])
    assert all(isinstance(v, list) and [h.run_id for h in v] == ["squaring"] for v in got.values())
    assert [r.run_id for r in leases.holders("acct")] == ["squaring"]


def test_a_dead_exclusive_holder_is_taken_over_by_the_ordinary_take(tmp_path: Path) -> None:
    leases = _leases(tmp_path)
    dead = "otherhost/00000000:1:1"  # a holder whose process the registry does not know: dead
    assert isinstance(leases.try_acquire("acct", "old", LeaseMode.EXCLUSIVE, "sq", holder=dead), Lease)
    got = leases.try_acquire_shared("acct", [("r1", "bid"), ("r2", "bid")])
    assert all(isinstance(v, Lease) for v in got.values())
    assert sorted(r.run_id for r in leases.holders("acct")) == ["r1", "r2"]


async def test_off_loop_shared_takes_queued_together_cost_one_transaction_per_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leases = _leases(tmp_path)
    calls: list[tuple[str, list[Any]]] = []
    real = leases.try_acquire_shared

    def noting(account: str, wanted: list[Any]) -> Any:
        calls.append((account, list(wanted)))
        return real(account, wanted)

    monkeypatch.setattr(leases, "try_acquire_shared", noting)
    clock = VirtualClock(NOW)
    takes = [
        leases.acquire(acct, run, LeaseMode.SHARED, "bid", clock=clock, wait=0, off_loop=True)
        for acct, run in [("a", "r1"), ("b", "r2"), ("a", "r3"), ("a", "r4")]
    ]
    got = await asyncio.gather(*takes)
    assert [g.run_id for g in got] == ["r1", "r2", "r3", "r4"]
    assert sorted(calls) == [("a", [("r1", "bid"), ("r3", "bid"), ("r4", "bid")]), ("b", [("r2", "bid")])]
    for lease in got:
        leases.release(lease)
    assert leases.holders("a") == []
