"""The group commit of runs prepared at their instant (fires taken over) writes in a worker thread, one
transaction at a time, and runs queued while one is written go together in the next (not one commit
each, serially: 230 taken fires armed one round trip after another went out seconds late)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path
from typing import Any

from runner.journal.db import make_engine
from runner.journal.groupcommit import GroupCommit, Staged

NOW = dt.datetime(2026, 12, 7, 3, 45, tzinfo=dt.UTC)


def _staged(cid: str) -> Staged:
    return Staged(None, [], [], cid)


async def test_runs_queued_while_a_transaction_is_written_share_the_next_one(tmp_path: Path) -> None:
    committer = GroupCommit(make_engine(f"sqlite:///{tmp_path / 'j.db'}"), off_loop=True)
    loop_thread = threading.get_ident()
    held = threading.Event()
    written: list[tuple[list[str], bool]] = []

    def write(batch: list[tuple[Staged, Any]]) -> None:
        written.append(([s.client_order_id for s, _ in batch], threading.get_ident() == loop_thread))
        held.wait(10)  # the first transaction is still being written while b and c queue

    committer._write = write  # type: ignore[method-assign]
    first = asyncio.ensure_future(committer.commit(_staged("a"), NOW))
    while not written:
        await asyncio.sleep(0.001)
    rest = []
    for cid in "bc":  # each in a loop tick of its own
        rest.append(asyncio.ensure_future(committer.commit(_staged(cid), NOW)))
        for _ in range(5):
            await asyncio.sleep(0)
    held.set()
    await asyncio.gather(first, *rest)
    assert written == [(["a"], False), (["b", "c"], False)]
