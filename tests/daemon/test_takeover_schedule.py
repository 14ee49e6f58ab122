"""The takeover look's schedule (issue 16): instead of every daemon scanning every 0.25 s, each look says
when the next lease could lapse and the next look sleeps until then (a little after), at most one lease,
at least 0.1 s; a claim this daemon forfeits wakes it at once. The takeover still follows a lapse
within a few hundredths of a second (the ≤ 2 s figure), with far fewer looks while nothing lapses."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from runner.daemon import scaleout
from runner.daemon.leasing import LEASE, LeaseBook
from runner.daemon.membership import Membership
from runner.daemon.scaleout import SCAN_AFTER_LAPSE, SCAN_AT_LEAST, ScaleOut, next_scan_in
from runner.journal import claim_leases
from runner.journal.claim_leases import Scan
from runner.journal.db import make_engine
from runner.journal.fires import Claim, FireRow, FireState, FireStore, fires

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_the_next_look_waits_for_the_earliest_lapse_capped_at_a_lease_and_floored() -> None:
    assert next_scan_in(Scan([], at(0), None)) == LEASE  # nothing leased: a new claim lasts a lease
    assert next_scan_in(Scan([], at(0), at(0.5))) == pytest.approx(0.5 + SCAN_AFTER_LAPSE)
    assert next_scan_in(Scan([], at(0), at(7))) == LEASE
    assert next_scan_in(Scan([], at(0), at(0.01))) == SCAN_AT_LEAST
    assert next_scan_in(Scan([], at(0), at(0.5)), lease=0.3) == 0.3


def test_a_scan_reports_the_earliest_lease_that_could_lapse_unsent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    a, b = FireStore(engine, "a"), FireStore(engine, "b")
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(seconds=60)
    in_s = lambda seconds: now + dt.timedelta(seconds=seconds)  # noqa: E731
    claims = {
        "soon": (b, Claim("soon", "v1", later, "r1"), later - dt.timedelta(seconds=30)),
        "past-instant": (b, Claim("x", "v1", in_s(5), "r2"), in_s(7)),
        "ours": (a, Claim("ours", "v1", later, "r3"), in_s(3)),
        "lapsed": (b, Claim("lapsed", "v1", later, "r4"), now - dt.timedelta(seconds=1)),
    }
    for store, claim, expires in claims.values():
        store.claim_many([claim], now)
        with engine.begin() as conn:
            conn.execute(fires.update().where(fires.c.fire_id == claim.fire_id).values(lease_expires=expires))
    found = claim_leases.scan(a)
    assert [r.playbook for r in found.rows] == ["lapsed"]
    # not ours; one lapsing after its instant counts (its holder may give it up unsent before then)
    assert found.next_lapse == claims["past-instant"][2]
    assert found.next_lapse is not None and found.next_lapse.tzinfo is not None
    ours = claims["ours"][1].fire_id
    assert claim_leases.scan(a, [ours]).next_lapse == claims["ours"][2]  # ours given up: looked at too


class Fake:
    """A database holding one claim by ``b`` whose lease lapses (unsent) at ``expires``, on a fake
    clock that moves only when the takeover loop sleeps."""

    def __init__(self, expires: float) -> None:
        self.t = 0.0
        self.expires = expires
        self.looks: list[float] = []
        self.row = FireRow(
            "f1",
            "pb1",
            "v1",
            at(expires + 5),
            "run-1",
            "b",
            at(-2),
            FireState.CLAIMED,
            None,
            at(-2),
            at(expires),
        )

    def scan(self, store: Any, own: Any = ()) -> Scan:
        self.looks.append(self.t)
        if self.t >= self.expires:
            return Scan([self.row], at(self.t), None)
        return Scan([], at(self.t), at(self.expires))


def test_the_loop_takes_over_right_after_the_lapse_and_looks_rarely_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Fake(expires=3.3)
    monkeypatch.setattr(claim_leases, "scan", fake.scan)
    taken_at: list[float] = []

    def take_over_many(_store: Any, rows: Any, *_: Any) -> set[str]:
        taken_at.append(fake.t)  # the compare-and-set, at the look that found the claim takeable
        return {row.fire_id for row in rows}

    monkeypatch.setattr(claim_leases, "take_over_many", take_over_many)
    store = FireStore(make_engine(f"sqlite:///{tmp_path / 'journal.db'}"), "a")
    membership = Membership("a", partitioned=True)
    membership.update(["a", "b"])
    scale = ScaleOut(store, membership, LeaseBook(), lambda: at(fake.t), _nothing, lambda: None)

    async def sleep(seconds: float) -> None:
        fake.t += seconds
        if fake.t > 10:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    scale.sleep = sleep
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scale.take_over_loop())
    assert taken_at and taken_at[0] - fake.expires <= SCAN_AFTER_LAPSE + 1e-9, fake.looks
    assert taken_at[0] >= fake.expires
    assert len(fake.looks) <= 12, fake.looks  # ~1 per lease; at the old fixed 0.25 s: 40 in 10 s
    assert scaleout.TAKEOVER_EVERY == 0.25  # lease timings unchanged


def test_a_forfeit_wakes_the_loop_at_once() -> None:
    leases = LeaseBook()
    store: Any = None
    scale = ScaleOut(store, Membership("a", partitioned=True), leases, lambda: T0, _nothing, lambda: None)

    async def main() -> bool:
        sleeping = asyncio.ensure_future(scale.sleep(LEASE * 100))
        await asyncio.sleep(0)
        leases.forfeit("f1")
        done, _ = await asyncio.wait({sleeping}, timeout=LEASE * 50)
        return sleeping in done

    assert asyncio.run(main())


async def _nothing(row: FireRow) -> None:
    return None


def test_the_journal_coming_back_wakes_the_idle_loop_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the journal is down the loop does not look (the heartbeat probes); when it is back, the
    claims that lapsed in the outage are looked for at once, not a lease later (the daemon may stop)."""
    import sqlite3

    from runner.journal.health import JournalHealth

    health = JournalHealth()
    health.probed = True
    health.trouble(sqlite3.OperationalError("unable to open database file"), "heartbeat write")
    store = FireStore(make_engine(f"sqlite:///{tmp_path / 'journal.db'}"), "a")
    scale = ScaleOut(store, Membership("a", partitioned=True), LeaseBook(lease=1000.0), lambda: T0, _nothing,
                     lambda: None)  # fmt: skip
    scale.health = health

    async def main() -> list[float]:
        looked = asyncio.Event()
        looks: list[float] = []

        def scan(*_: Any) -> Scan:
            looks.append(1.0)
            looked.set()
            return Scan([], T0, None)

        monkeypatch.setattr(claim_leases, "scan", scan)
        loop = asyncio.ensure_future(scale.take_over_loop())
        for _ in range(5):
            await asyncio.sleep(0)
        assert looks == []  # down: no look
        health.ok()
        await asyncio.wait_for(looked.wait(), 60)  # a deadline for a broken wake, not a timing
        loop.cancel()
        return looks

    assert asyncio.run(main()) == [1.0]
