"""Issue 11 §5: another process holding the SQLite journal's write lock must not freeze the daemon, nor
make an HA peer take it for dead (and close its live runs) because its heartbeat could not land.

Short periods stand in for the real ones: beats every 50 ms, a peer judged stale after 0.5 s of its
clock (moved by hand), the lock held for ~1 s by a plain sqlite3 connection (real time, small)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.policy import PeerWatch
from runner.journal.fires import FireState, read_daemons

DUE = dt.datetime(2026, 11, 23, 3, 45, tzinfo=dt.UTC)  # 09:15 IST, a trading day
CAL = DayCalendar({2026}, set())
STALE = dt.timedelta(seconds=0.5)
BEAT = 0.05  # seconds between heartbeats


class Ticker:
    """Counts event-loop iterations of a 5 ms sleep: the loop is serving while it counts."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1


def heartbeat_of(db: Path, daemon_id: str) -> str:
    conn = sqlite3.connect(db)
    try:
        (value,) = conn.execute(
            "SELECT heartbeat_at FROM daemons WHERE daemon_id = ?", (daemon_id,)
        ).fetchone()
    finally:
        conn.close()
    return str(value)


async def test_a_locked_journal_keeps_the_loop_serving_and_no_peer_is_taken_for_dead(tmp_path: Path) -> None:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    (pbdir / "a.yaml").write_text(playbook_text("slow", 'daily: "09:15"', calendar="NSE"))
    db = tmp_path / "journal.db"
    url = f"sqlite:///{db}"
    clock = VirtualClock(DUE)
    ex = RecordingExecutor(clock, block=True)
    d1 = make_daemon(pbdir, url, clock, ex, "d1", CAL)
    d1.heartbeat.interval = BEAT
    await d1.prepare()
    fire = asyncio.ensure_future(d1.fire(d1.entries["slow"], DUE))  # d1 is executing a fire: live
    await ex.started.wait()
    await asyncio.sleep(0.05)  # the RUNNING mark lands (worker thread)
    fire_id = ex.calls[0][0].fire_id

    c2 = VirtualClock(DUE)
    d2 = make_daemon(pbdir, url, c2, RecordingExecutor(c2), "d2", CAL)
    d2.heartbeat.interval = BEAT
    d2.peers = PeerWatch("d2", stale_after=STALE)
    await d2.prepare()
    ticker = Ticker()
    tasks = [asyncio.create_task(t) for t in (d1.heartbeat.run(), d2.heartbeat.run(), ticker.run())]
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        assert await d2.sweep_interrupted() == []  # d1's heartbeat noted
        before = heartbeat_of(db, "d1")

        # Another process takes the write lock and keeps it ~1 s; both daemons' beats wait for it.
        blocker.execute("BEGIN IMMEDIATE")
        ticks = ticker.ticks
        released = asyncio.Event()

        def release() -> None:
            nonlocal ticks
            ticks = ticker.ticks - ticks  # loop iterations while the lock was held
            blocker.execute("COMMIT")
            released.set()

        asyncio.get_running_loop().call_later(1.0, release)
        await asyncio.sleep(0.3)  # both daemons' beats are now stuck behind the lock
        clock.advance(1.0)  # d1's next beat carries a new time, once it lands
        c2.advance(2 * STALE.total_seconds())  # by d2's clock, d1's heartbeat stood still past STALE
        swept = await d2.sweep_interrupted()  # during the lock
        await released.wait()

        assert swept == []  # a heartbeat the database refused is no evidence of death
        row = d2.store.get(fire_id)
        assert (
            row is not None and row.state in (FireState.CLAIMED, FireState.RUNNING) and row.claimed_by == "d1"
        )
        assert ticks >= 10  # the loop kept serving while the journal was locked (~190 if free)
        for _ in range(200):  # d1's beat lands once the lock is gone
            if heartbeat_of(db, "d1") != before:
                break
            await asyncio.sleep(0.01)
        assert heartbeat_of(db, "d1") != before
        assert {d["daemon_id"] for d in read_daemons(d2.store.engine) if d["stopped_at"] is None} == {
            "d1",
            "d2",
        }

    finally:
        blocker.close()
        for t in tasks:
            t.cancel()
        ex.release.set()
        await asyncio.gather(fire, *tasks, return_exceptions=True)
