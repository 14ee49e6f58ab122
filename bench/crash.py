"""Crash figures: SIGKILL rehearsals at random instants and at exact points around requests, in sequences
(a start killed while recovering from the kill before), on both paper broker modes of
tests/helpers/crash.py, plus concurrent square-offs of one account (one of them perhaps killed). Prints
iterations, SIGKILLs, duplicates, lost intents and wrong end states: the goal is 0 / 0 / 0.

Until account leases land (issue 11 §1) the concurrent iterations end in wrong end states (closed twice);
``--no-concurrent`` leaves them out. ``RUNNER_CRASH_STALE_STATUS=problem`` also counts a journaled status
that is not the broker's as a wrong end state (issue 11 §4).

Usage: python bench/crash.py [--kills 1000] [--seed N] [--no-concurrent]
(RUNNER_CRASH_BENCH_KILLS sets the default count; tests/crash/test_crash.py keeps a smaller one in CI.)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

DUPLICATE = ("times", "orders at the broker", "entered")  # a second order, by id or per step
LOST = ("not in the journal", "still", "not at the broker", "journaled absent")


def kind(problem: str) -> str:
    if any(s in problem for s in DUPLICATE):
        return "duplicates"
    if any(s in problem for s in LOST):
        return "lost intents"
    return "wrong end states"


def main() -> None:
    from helpers.crash import Harness, Mode

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=int(os.environ.get("RUNNER_CRASH_BENCH_KILLS", "1000")))
    ap.add_argument(
        "--seed", type=int, default=int(os.environ.get("RUNNER_CRASH_SEED") or random.randrange(1 << 30))
    )
    ap.add_argument("--no-concurrent", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"seed {args.seed} (--seed {args.seed} replays the draws)")
    tty = sys.stderr.isatty()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        harnesses = {mode: Harness(tmp, mode) for mode in Mode}
        counts: Counter[str] = Counter()
        examples: dict[str, str] = {}
        kills = iterations = concurrent = 0
        t0 = time.perf_counter()
        while kills < args.kills:
            iterations += 1
            if not args.no_concurrent and iterations % 10 == 0:
                concurrent += 1
                problems, k = harnesses[Mode.IDEMPOTENT].concurrent(rng)
            else:
                check, k = harnesses[Mode.PLAIN if iterations % 2 else Mode.IDEMPOTENT].iteration(rng)
                problems = check.problems
            kills += k
            for what in {kind(p) for p in problems}:
                counts[what] += 1
                examples.setdefault(what, f"iteration {iterations}: {problems[:3]}")
            if tty:
                print(
                    f"\r{kills}/{args.kills} SIGKILLs, {iterations} iterations, {dict(counts)}",
                    end="",
                    file=sys.stderr,
                )
        if tty:
            print(file=sys.stderr)
    took = time.perf_counter() - t0
    print(f"{iterations} iterations ({concurrent} concurrent square-offs), {kills} SIGKILLs in {took:.0f} s")
    print(
        f"duplicates {counts['duplicates']}, lost intents {counts['lost intents']}, "
        f"wrong end states {counts['wrong end states']} (iterations with each; goal 0 / 0 / 0)"
    )
    for what, example in examples.items():
        print(f"  first {what}: {example}")
    sys.exit(1 if counts else 0)


if __name__ == "__main__":
    main()
