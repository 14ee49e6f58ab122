"""Fires taken over are prepared in worker threads of their own (runner.journal.offloop). Their journal
work must not queue behind the instant's group commit, which holds the process's shared hot-path
connection for its whole batch: each of those threads journals on a connection of its own (issue 16; a
survivor's 180 taken fires were all armed at once only as its own burst's bookkeeping ended, +2.9 s)."""

from __future__ import annotations

import asyncio
import threading

from runner.journal.db import make_engine
from runner.journal.fastpath import fast_for
from runner.journal.offloop import off_loop
from runner.journal.store import Journal


async def test_off_loop_journal_reads_do_not_wait_for_the_shared_connection(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    journal = Journal(engine=engine)
    shared = fast_for(engine)
    held, done = threading.Event(), threading.Event()

    def group_commit_holding_it() -> None:
        with shared.slot.lock:
            held.set()
            done.wait(60)

    holder = threading.Thread(target=group_commit_holding_it)
    holder.start()
    held.wait()
    try:
        # a taken fire's preparation looks its run up (and more) on one of these threads
        steps = await asyncio.wait_for(off_loop(journal.steps_of, "20260302-091500+0530-nosuchrn"), 30)
        own = await off_loop(fast_for, engine)
    finally:
        done.set()
        holder.join()
    assert steps == {}
    assert own.slot is not shared.slot
    engine.dispose()
