"""Crash harness shared by tests/test_crash.py and bench/engine.py: run a rehearsal in a forked child,
SIGKILL it at a random instant, restart it, and check the book against the journal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

CRASH_PLAYBOOK = """\
version: 1
name: crashy
timezone: Asia/Kolkata
instruments:
  fut: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, lot_size: 75, freeze_quantity: 1800}
  ce: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}
  pe: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24000, option_type: PE, lot_size: 75}
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: a, at: "09:20", instrument: fut, side: BUY, lots: 2}
  - {kind: place, id: b, instrument: rel, side: BUY, quantity: 10}
  - kind: spread
    id: s
    legs:
      - {id: hedge, instrument: pe, side: BUY, lots: 1, role: hedge}
      - {id: short, instrument: ce, side: SELL, lots: 1}
  - {kind: place, id: c, instrument: rel, side: BUY, quantity: 5, type: LIMIT, price: 1300}
  - {kind: cancel, id: x, order: c}
  - {kind: square_off, id: sq, at: "15:15"}
"""
DAY = dt.date(2026, 3, 2)
# Entry quantities per instrument key: each must reach the book exactly once.
EXPECTED_BUYS = {"NFO NIFTY 2026-12-29": 150, "NSE RELIANCE": 10, "NFO NIFTY 2026-12-29 24000 PE": 75}
EXPECTED_SELLS = {"NFO NIFTY 2026-12-29 24500 CE": 75}


def _playbook() -> Any:
    from runner.playbook import Playbook
    from runner.yamlload import load_yaml

    return Playbook.model_validate(load_yaml(CRASH_PLAYBOOK).value)


class Harness:
    """One SQLite path reused by every iteration, and an Engine whose statement cache is warmed in the
    parent (so each forked child starts fast). The parent holds no connection when it forks."""

    def __init__(self, tmp_dir: str) -> None:
        from runner import logs
        from runner.db import make_engine

        logs.configure(json=True, stream=io.StringIO(), force=True)
        self.path = f"{tmp_dir}/crash.db"
        self.url = f"sqlite:///{self.path}"
        self.engine = make_engine(self.url)
        self.pb = _playbook()
        t0 = time.perf_counter()
        self._rehearse_here()  # warm-up, cold caches
        self.reset()
        t0 = time.perf_counter()
        self._rehearse_here()
        self.full_run = time.perf_counter() - t0  # a warm, uninterrupted run
        problems = check_book(self.url).problems
        assert not problems, problems
        self.reset()

    def _rehearse_here(self) -> None:
        from runner.rehearse import rehearse

        report = asyncio.run(rehearse(self.pb, DAY, engine=self.engine))
        assert report.ok, report

    def reset(self) -> None:
        """Drop every connection of this process to the file, then delete it."""
        release_paper_connections(self.engine)
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)

    def child(self) -> None:
        code = 1
        try:
            from runner.rehearse import rehearse

            report = asyncio.run(rehearse(self.pb, DAY, engine=self.engine))
            code = 0 if report.ok else 3
        finally:
            os._exit(code)

    def run_child(self, kill_after: float | None) -> int | None:
        """Fork a rehearsal; SIGKILL it after ``kill_after`` seconds (None: let it finish). Returns its
        exit code, or None when it was killed."""
        pid = os.fork()
        if pid == 0:
            self.child()
        if kill_after is not None:
            deadline = time.monotonic() + kill_after
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return None if code == -signal.SIGKILL else code

    def iteration(self, rng: random.Random, kills_per_iteration: int = 1) -> tuple[Check, int]:
        kills = 0
        for _ in range(kills_per_iteration):  # kill at random instants, then an uninterrupted start
            if self.run_child(rng.uniform(0.0, self.full_run * 1.2)) is None:
                kills += 1
        code = self.run_child(None)
        check = check_book(self.url)
        if code != 0:
            check.problems.append(f"final start exited {code}")
        self.reset()
        return check, kills


def release_paper_connections(engine: sa.Engine) -> None:
    """The paper broker keeps one raw DBAPI connection per Engine; close it before forking."""
    from runner.brokers import paper

    dbs = getattr(paper, "_DBS", None)
    db = dbs.pop(engine, None) if dbs is not None else None
    raw = getattr(db, "_raw", None)
    if raw is not None:
        raw.close()


@dataclass
class Check:
    problems: list[str]
    orders: int


def check_book(db_url: str) -> Check:
    """After a completed run: no order twice, none lost, flat, and every broker order journaled."""
    from runner.db import make_engine

    engine = make_engine(db_url)
    problems: list[str] = []
    try:
        meta = sa.MetaData()
        orders = sa.Table("paper_orders", meta, autoload_with=engine)
        runs = sa.Table("runs", meta, autoload_with=engine)
        intents = sa.Table("order_intents", meta, autoload_with=engine)
        with engine.connect() as c:
            status = [r.status for r in c.execute(sa.select(runs.c.status))]
            rows = list(c.execute(sa.select(orders.c.client_order_id, orders.c.body)))
            journaled = {r[0] for r in c.execute(sa.select(intents.c.client_order_id))}
        if status != ["succeeded"]:
            problems.append(f"run status {status}")
        import json

        bodies = [json.loads(b) for _, b in rows]
        ids = Counter(cid for cid, _ in rows)
        problems += [f"client id {cid} at the broker {n} times" for cid, n in ids.items() if n > 1]
        problems += [f"broker order {cid} not in the journal" for cid in ids if cid not in journaled]
        buys: Counter[str] = Counter()
        sells: Counter[str] = Counter()
        for cid, body in zip(ids, bodies, strict=False):
            del cid
            filled = int(_get(body, "filled_quantity") or 0)
            key = _instrument_key(body)
            (buys if _get(body, "side") == "BUY" else sells)[key] += filled
        # entries exactly once (+ their exits): buys - exits of shorts == expected, and flat overall
        for key, qty in EXPECTED_BUYS.items():
            if buys[key] != qty or sells[key] != qty:
                problems.append(f"{key}: bought {buys[key]} sold {sells[key]}, expected {qty} each way")
        for key, qty in EXPECTED_SELLS.items():
            if sells[key] != qty or buys[key] != qty:
                problems.append(f"{key}: sold {sells[key]} bought {buys[key]}, expected {qty} each way")
        return Check(problems, len(rows))
    finally:
        engine.dispose()


def _get(body: dict, name: str) -> object:
    if name in body:
        return body[name]
    order = body.get("order") or {}
    return order.get(name)


def _instrument_key(body: dict) -> str:
    ins = _get(body, "instrument")
    if isinstance(ins, str):
        return ins
    assert isinstance(ins, dict)
    from runner.journal import instrument_from_json

    return instrument_from_json(__import__("json").dumps(ins)).key
