"""One hot-path connection per SQLite engine, shared by the journal and the paper book: runs stay correct
with other processes writing the same file, and a forked child never reuses its parent's connection."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.brokers.paper.broker import PaperBroker
from runner.clock import VirtualClock
from runner.journal.db import connection_slot, make_engine
from runner.journal.store import Journal

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 2, 3, 50, tzinfo=dt.UTC)

# A child process: entries then a square-off on its own account, journal and book on one shared file.
CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, "tests")
    from helpers.engine import at, playbook
    from runner.brokers.paper.broker import PaperBroker
    from runner.clock import VirtualClock
    from runner.journal.db import make_engine
    from runner.engine.core import RunOptions, execute
    from runner.journal.store import Journal
    from runner.brokers.paper.price_paths import StepPath
    from runner.model import Instrument
    from decimal import Decimal

    url, account, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = make_engine(url)
    clock = VirtualClock(at(9, 20))
    prices = StepPath()
    prices.set(Instrument("NSE", "RELIANCE"), Decimal(1400), at(9, 0))
    book = PaperBroker(account, engine=engine, clock=clock, prices=prices)
    journal = Journal(engine=engine)
    assert journal._fast.slot is book.store.db.slot
    steps = "".join(
        f"  - {{kind: place, id: e{i}, instrument: rel, side: BUY, quantity: {i + 1}}}\\n" for i in range(n)
    )
    pb = playbook("steps:\\n" + steps + "  - {kind: square_off, id: sq, filter: {}}\\n", "p")
    report = asyncio.run(execute(pb, book, journal, clock, account=account,
                                 options=RunOptions(scheduled_for=at(9, 20), run_key=account)))
    print(json.dumps({"status": report.status.value, "run_id": report.run_id}))
    """
)


def test_sqlite_journal_and_paper_book_share_one_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    book = PaperBroker("a", engine=engine, clock=VirtualClock(T0))
    journal = Journal(engine=engine)
    assert journal._fast.slot is book.store.db.slot is connection_slot(engine, "anyone")
    engine.dispose()
    assert journal._fast.slot.raw is None  # dispose drops it; the next use opens a fresh one


def test_other_dialects_keep_a_connection_per_user() -> None:
    pytest.importorskip("psycopg")
    engine = make_engine("postgresql://runner@127.0.0.1:1/none")  # never connected
    assert connection_slot(engine, "journal") is not connection_slot(engine, "paper")
    assert connection_slot(engine, "paper") is connection_slot(engine, "paper")


def test_concurrent_processes_each_run_journal_and_book_on_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    make_engine(url).dispose()
    n = 8
    accounts = ["x", "y", "z"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, a, str(n)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in accounts
    ]
    runs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        runs.append(json.loads(out))
    assert [r["status"] for r in runs] == ["succeeded"] * 3
    engine = make_engine(url)
    with engine.connect() as c:
        intents = c.execute(
            sa.text("SELECT account, step_id, count(*) FROM order_intents GROUP BY account, step_id")
        ).all()
        orders = c.execute(sa.text("SELECT account, client_order_id FROM paper_orders")).all()
    engine.dispose()
    assert sorted(intents) == sorted(
        [(a, f"e{i}", 1) for a in accounts for i in range(n)] + [(a, "sq", 1) for a in accounts]
    )
    assert len(orders) == len(set(orders)) == 3 * (n + 1)  # every intent reached the book exactly once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
async def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    book = PaperBroker("a", engine=engine, clock=VirtualClock(T0))
    await book.connect()
    await book.positions()
    slot = book.store.db.slot
    parents = slot.raw
    assert parents is not None
    pid = os.fork()
    if pid == 0:  # child: nothing inherited is used; a write works on a fresh connection
        ok = slot.raw is None
        try:
            Journal(engine=engine).record_event(None, "note", "from the child", book.clock.now())
        except BaseException:
            ok = False
        os._exit(0 if ok and slot.raw is not None and slot.raw is not parents else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert slot.raw is parents  # the parent keeps its own, still usable
    await book.positions()
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT message FROM events")).scalars().all() == ["from the child"]
    engine.dispose()
