"""The crash harness fails on planted defects (tests/helpers/crash_mutations.py, patched into the crash
children
only): (i) an entry placed twice under a second journaled id, (ii) a re-send without the restamp before
it, (iii) a square-off executed twice. Each is checked against an unmutated control of the same sequence,
so a harness that failed anyway would show here too."""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.crash import ABSENT_AFTER, LOOKUP_LAG, Check, Die, Harness, Mode
from helpers.crash_mutations import Mutation

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork()")


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[str]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=base) as path:
        yield path


def uninterrupted(harness: Harness) -> Check:
    check, _ = harness.iteration(random.Random(0), kills_per_iteration=0)
    return check


def double_crash(harness: Harness) -> Check:
    """Issue 11 §3's sequence on a broker that accepts a repeated client id and whose lookups lag: start 1
    dies before its first order reaches the broker; start 2, past absent_after, proves it absent,
    re-sends it and dies once the request arrived; start 3 comes back within the lookup lag, when a
    lookup still misses the order. Only the restamp before start 2's re-send keeps start 3 from taking
    the miss for absence and sending a second order."""
    assert harness.run_child(None, 0.0, die=Die(1, before=True)) is None
    assert harness.run_child(None, 2 * ABSENT_AFTER, die=Die(1, before=False)) is None
    assert (
        harness.run_child(None, LOOKUP_LAG / 4, die=Die(1, before=False)) is None
    )  # a re-send would die too
    return harness.finish(random.Random(0), 3)[0]


def test_the_harness_passes_the_unmutated_sequences(tmp: str) -> None:
    assert not uninterrupted(Harness(tmp, Mode.IDEMPOTENT)).problems
    check = double_crash(Harness(tmp, Mode.PLAIN))
    assert not check.problems
    assert check.recent > 0, "start 3 should have found the re-sent order too recent to call absent"


def test_a_duplicate_under_a_second_id_fails_the_harness(tmp: str) -> None:
    problems = uninterrupted(Harness(tmp, Mode.IDEMPOTENT, mutation=Mutation.DUPLICATE)).problems
    assert "step b: 2 orders at the broker, it places 1" in problems, problems


def test_a_skipped_restamp_fails_the_harness(tmp: str) -> None:
    problems = double_crash(Harness(tmp, Mode.PLAIN, mutation=Mutation.SKIP_RESTAMP)).problems
    assert any("at the broker 2 times" in p for p in problems), problems


def test_a_square_off_executed_twice_fails_the_harness(tmp: str) -> None:
    problems = uninterrupted(Harness(tmp, Mode.IDEMPOTENT, mutation=Mutation.SQUARE_OFF_TWICE)).problems
    assert "step sq: 8 orders at the broker, it places 4" in problems, problems
    assert "NSE RELIANCE: not flat, bought 10 sold 20" in problems, problems
