"""Several processes opening one new SQLite file at once (issue: "database is locked" from a child's
``PRAGMA journal_mode = WAL``, which takes an exclusive lock and did not wait for it)."""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.journal import tables
from runner.journal.db import create_all, make_engine

PROCESSES = 8
ROUNDS = 20  # one in five rounds failed before the fix; ~4 s in all


def _open(url: str, barrier: Any, results: Any, schema: bool) -> None:
    try:
        engine = make_engine(url)
        barrier.wait(timeout=30)  # every child connects at the same instant
        if schema:
            create_all(engine, tables.metadata)
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        engine.dispose()
        results.put(f"mode {mode}")
    except BaseException:
        results.put(traceback.format_exc())


def _round(path: Path, schema: bool) -> list[str]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    url = f"sqlite:///{path}"
    children = [ctx.Process(target=_open, args=(url, barrier, results, schema)) for _ in range(PROCESSES)]
    for child in children:
        child.start()
    out = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_many_processes_opening_one_new_file_all_get_wal(tmp_path: Path) -> None:
    for i in range(ROUNDS):
        out = _round(tmp_path / f"r{i}.db", schema=False)
        assert out == ["mode wal"] * PROCESSES, next(o for o in out if o != "mode wal")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_many_processes_creating_the_schema_of_one_new_file(tmp_path: Path) -> None:
    """The first-open DDL path (migrations.ensure) under the same race: one schema, every child fine."""
    for i in range(3):
        path = tmp_path / f"s{i}.db"
        out = _round(path, schema=True)
        assert out == ["mode wal"] * PROCESSES, next(o for o in out if o != "mode wal")
        engine = make_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        assert sa.inspect(engine).has_table("order_intents")
        engine.dispose()
