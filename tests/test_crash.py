"""Crash test: a rehearsal in a forked child is SIGKILLed at a random instant, then started again on the
same SQLite file (journal + paper book). After every iteration: the run completed, no client id reached
the broker twice, every entry reached it exactly once (and was squared off exactly once), and every
broker order is in the journal. ``RUNNER_CRASH_ITERATIONS`` raises the count (bench/engine.py runs more).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile

import pytest
from crash_support import Harness

ITERATIONS = int(os.environ.get("RUNNER_CRASH_ITERATIONS", "200"))


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork()")
def test_sigkill_at_random_points_never_duplicates_or_loses_an_order(tmp_path):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        harness = Harness(tmp)
        rng = random.Random(20260302)
        kills = 0
        for n in range(ITERATIONS):
            check, killed = harness.iteration(rng)
            kills += killed
            assert not check.problems, f"iteration {n}: {check.problems}"
        assert kills >= ITERATIONS // 2, f"only {kills} of {ITERATIONS} starts were actually killed"
