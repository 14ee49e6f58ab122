"""Crash across the run id scheme change (issue 15): a run started under the legacy scheme (UTC date, no
offset) is SIGKILLed with an order at the broker, then started again by the new code on the same journal
and paper book. The restart must find the journaled run by its legacy id (never re-derive it): same run
id, same client order ids, no second order."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.crash import DAY, Die, Harness, Mode, check_book

from runner import ids
from runner.journal.store import Journal
from runner.plan.rehearse import run_key, slot_of


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork()")
@pytest.mark.parametrize("die", [Die(request=1, before=False), Die(request=3, before=False)])
def test_a_legacy_run_killed_mid_day_keeps_its_id_and_orders_after_the_upgrade(
    tmp_path: Path, die: Die
) -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        harness = Harness(tmp, Mode.IDEMPOTENT)
        key, slot = run_key(harness.pb), slot_of(harness.pb, DAY)
        legacy = ids.legacy_run_id(key, slot)
        assert legacy != ids.run_id(key, slot, slot.tzinfo)  # the schemes differ for this slot
        harness.run_id = legacy  # the child runs as the old code did: its id from the UTC date
        assert harness.run_child(None, die=die) is None, "the old-scheme start was not killed"
        journal = Journal(harness.url)
        before = {i.client_order_id for i in journal.intents(run_id=legacy)}
        assert before, "the killed start journaled nothing"
        journal.close()

        harness.run_id = None  # the new code: derives the id, finds the journaled legacy run
        report = asyncio.run(harness._rehearse(0.0))
        assert report.run_id == legacy and report.resumed
        check = check_book(harness.url, Mode.IDEMPOTENT)
        assert not check.problems, check.problems
        journal = Journal(harness.url)
        after = {i.client_order_id for i in journal.intents(run_id=legacy)}
        assert before <= after  # the same client ids, looked up rather than re-sent
        assert [r.run_id for r in journal.list_runs()] == [legacy]  # no second run under the new id
        journal.close()
        harness.reset()
