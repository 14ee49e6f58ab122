"""Every shipped example in playbooks/ runs unchanged on every simulator (issue 13 §6): one ``runner sim
BROKER`` process per broker, an accounts file built from its first stdout line (``account`` as is, ``env``
into the environment), and ``runner run EXAMPLE --now --ignore-calendar --account sim`` exits 0. Real
processes and loopback sockets throughout.

To keep wall time low on 2 cores, all four simulators run at once and the examples are run in two phases
through one bounded worker pool: first the ones that open orders/positions (concurrently: each trades its
own instruments or is self-contained), then the end-of-day sweeps, one after another per broker (they act on
the whole account, so running them next to the entries would make both outcomes depend on timing).

Known gaps of today's examples and simulator masters are ``xfail(strict=True, raises=KnownGap)``: a gap
counts only when the run fails *for the stated reason* (any other failure is an error), and a gap that gets
fixed turns into an XPASS failure, so the entry must then be deleted from ``GAPS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.commands.sim import SIMS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "playbooks"
# End-of-day sweeps act on the whole account: run after the entries, in this order, one at a time.
SWEEPS = ("strategy_square_off", "cancel_all_open", "intraday_square_off")
EXAMPLES = tuple(sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml")))
ENTRIES = tuple(e for e in EXAMPLES if e not in SWEEPS)
RUN_TIMEOUT = 300  # seconds; opening_straddle_chase chases for about 80 s of real time by design
WORKERS = 8  # the long runs (chases) mostly sleep; the pool bounds start-up CPU on 2 cores

# (broker, example) -> (text the failing run must print, why): known failures, each fixed in code and then
# deleted from here (strict xfail turns a fixed gap into a failure). Empty: every example runs on every
# simulator (the simulators price from the paper broker's reference market, runner/brokers/sim_prices.py).
GAPS: dict[tuple[str, str], tuple[str, str]] = {}


class KnownGap(AssertionError):
    """The run failed for the reason listed in GAPS."""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str


@dataclass
class Sim:
    broker: str
    process: subprocess.Popen[str]
    env: dict[str, str]
    workdir: Path


def start_sim(broker: str, workdir: Path) -> Sim:
    workdir.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", broker, "--master-out", str(workdir / "master.csv")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    line = json.loads(proc.stdout.readline())
    accounts = workdir / "accounts.yaml"
    accounts.write_text(json.dumps({"version": 1, "accounts": {"sim": line["account"]}}))  # JSON is YAML
    return Sim(broker, proc, {**os.environ, **line["env"], "RUNNER_ACCOUNTS": str(accounts)}, workdir)


def run_example(sim: Sim, example: str) -> Outcome:
    # One journal per run: the runs are independent, and no two processes contend for one SQLite file.
    env = {**sim.env, "RUNNER_DB": f"sqlite:///{sim.workdir / (example + '.db')}"}
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(EXAMPLES_DIR / f"{example}.yaml"), "--now",
         "--ignore-calendar", "--account", "sim"],
        env=env, cwd=sim.workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    return Outcome(done.returncode, done.stdout + done.stderr)


def run_sweeps(sim: Sim) -> dict[str, Outcome]:
    return {example: run_example(sim, example) for example in SWEEPS}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Outcome]]:
    base = tmp_path_factory.mktemp("examples-on-sims")
    sims: list[Sim] = []
    try:
        for broker in SIMS:
            sims.append(start_sim(broker, base / broker))
        results: dict[tuple[str, str], Outcome] = {}
        with ThreadPoolExecutor(WORKERS) as pool:
            # The chase (the longest, mostly idle) first, so it overlaps everything else.
            jobs = sorted(((s, e) for s in sims for e in ENTRIES),
                          key=lambda j: j[1] != "opening_straddle_chase")
            entries = {(s.broker, e): pool.submit(run_example, s, e) for s, e in jobs}
            for key, fut in entries.items():
                results[key] = fut.result()
            sweeps = {s.broker: pool.submit(run_sweeps, s) for s in sims}
            for broker, fut in sweeps.items():
                for example, outcome in fut.result().items():
                    results[(broker, example)] = outcome
        yield results
    finally:
        for sim in sims:
            sim.process.terminate()
        for sim in sims:
            sim.process.wait(timeout=10)
            if sim.process.stdout is not None:
                sim.process.stdout.close()


def cases() -> list[object]:
    out: list[object] = []
    for broker in SIMS:
        for example in EXAMPLES:
            gap = GAPS.get((broker, example))
            marks = [pytest.mark.xfail(strict=True, raises=KnownGap, reason=gap[1])] if gap else []
            out.append(pytest.param(broker, example, marks=marks, id=f"{broker}-{example}"))
    return out


def test_examples_and_gaps_are_known() -> None:
    """A renamed or removed example must not leave a stale GAPS entry behind (nor a sweep unrun)."""
    assert {e for _, e in GAPS} <= set(EXAMPLES)
    assert {b for b, _ in GAPS} <= set(SIMS)
    assert set(SWEEPS) <= set(EXAMPLES) and len(ENTRIES) >= 5


@pytest.mark.parametrize(("broker", "example"), cases())
def test_example_runs_on_simulator(
    broker: str, example: str, outcomes: dict[tuple[str, str], Outcome]
) -> None:
    outcome = outcomes[(broker, example)]
    gap = GAPS.get((broker, example))
    if outcome.returncode != 0 and gap is not None and gap[0] in outcome.output:
        raise KnownGap(f"{gap[1]}:\n{outcome.output[-2000:]}")
    assert outcome.returncode == 0, outcome.output[-4000:]
