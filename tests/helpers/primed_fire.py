"""Primed requests (runner.brokers.primed) in tests: their writes recorded, and one daemon fire through a
primed request for the adapters that prime: the executor primes the armed order while preparing, and at
the instant its request is one socket write."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from runner.brokers.primed import PrimedRequest
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon, DaemonOptions, EngineExecutor
from runner.engine.killswitch import ControlStore, GuardedBroker
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore
from runner.journal.records import Intent
from runner.journal.store import Journal

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
INSTANT = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST).astimezone(dt.UTC)  # a Monday, market open


def record_primed_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of primed requests written to their sockets from now on (the write itself unchanged)."""
    written: list[str] = []
    original = PrimedRequest.write

    def write(self: PrimedRequest) -> None:
        written.append(self.url)
        original(self)

    monkeypatch.setattr(PrimedRequest, "write", write)
    return written


class LeadClock(VirtualClock):
    """Virtual time, but the instant comes only after the executor's primes finished (its lead: real
    connections to the simulator take real time)."""

    executor: EngineExecutor

    async def sleep_until(self, when: dt.datetime) -> None:
        await asyncio.gather(*self.executor._warming)
        await super().sleep_until(when)


class OnePool(dict[str, object]):
    def get_broker(self, account: str) -> object:
        return self[account]


async def fire_primed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: LeadClock, playbook: str, account: str,
    adapter: Any,
) -> tuple[Intent, list[str]]:
    """``playbook`` (named ``entry``, on ``account``) fired at INSTANT by a daemon on ``adapter``; asserts
    it SUCCEEDED with its order acknowledged, and returns its intent and the URLs of the primed requests
    written."""
    written = record_primed_writes(monkeypatch)
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "entry.yaml").write_text(playbook)
    db = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    journal = Journal(engine=db)
    pool = OnePool()
    clock.executor = EngineExecutor(pool, journal, clock)
    daemon = Daemon(
        pbdir, fires=FireStore(db, "d1"), control=ControlStore(db), executor=clock.executor, clock=clock,
        options=DaemonOptions(lead=1.0),
    )  # fmt: skip
    pool[account] = GuardedBroker(adapter, daemon.watcher)
    await daemon.prepare()
    await daemon.fire(daemon.entries["entry"], INSTANT)
    row = daemon.store.slot("entry", INSTANT)
    assert row is not None and row.state is FireState.SUCCEEDED, row
    [intent] = journal.intents(run_id=row.run_id)
    assert intent.broker_order_id is not None
    return intent, written
