"""Validation throughput and CLI cold start, as ratios against baselines measured in the same process.

    python bench/validate.py            # 1,000 playbooks; cold start of `runner --help` / `runner validate`

Targets (issue 2): 1,000 playbooks in <= 0.5 s on a 2-core machine; `runner --help` <= 150 ms,
`runner validate one.yaml` <= 300 ms. The corpus is the shipped examples with distinct names.
Figures are medians (wall and CPU time); each line shows the 1-minute load average when it was measured,
because a shared machine can double wall times.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.playbook.checks.doc import AccountNames  # noqa: E402
from runner.playbook.validate import validate_paths, validate_text  # noqa: E402

N = 1000
REPEATS = 7


def median(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall time and median CPU time of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def load() -> str:
    return "load " + Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else ""


def corpus() -> list[str]:
    sources = [p.read_text() for p in sorted((ROOT / "playbooks").glob("*.yaml"))]
    texts = []
    for i in range(N):
        text = sources[i % len(sources)]
        name = next(line for line in text.splitlines() if line.startswith("name: "))
        texts.append(text.replace(name, f"{name}-{i}", 1))
    return texts


def cold(cmd: list[str], runs: int = 9) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    subprocess.run(cmd, capture_output=True, env=env, check=False)  # warm the page cache and .pyc files
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    texts = corpus()
    names = AccountNames(frozenset({"paper"}))
    reports = [validate_text(t, f"p{i}.yaml", names) for i, t in enumerate(texts)]
    assert all(r.ok for r in reports), "corpus must be valid"

    print(f"cpus: {os.cpu_count()}  corpus: {N} playbooks, {sum(map(len, texts)) / N:.0f} chars avg")
    t_c, c_c = median(lambda: [yaml.load(t, Loader=yaml.CSafeLoader) for t in texts])
    print(f"baseline yaml CSafeLoader x{N}         : {t_c:.3f} s  (cpu {c_c:.3f} s)  [{load()}]")
    t_val, c_val = median(lambda: [validate_text(t, "p.yaml", names) for t in texts])
    print(
        f"validate_text x{N} (1 process)        : {t_val:.3f} s  (cpu {c_val:.3f} s)  "
        f"{t_val / t_c:.2f}x CSafeLoader (cpu {c_val / c_c:.2f}x)  [{load()}]  (target <= 0.5 s)"
    )

    tmp = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    try:
        for i, text in enumerate(texts):
            (tmp / f"p{i:04d}.yaml").write_text(text)
        for jobs in (1, os.cpu_count() or 1):
            t, _ = median(functools.partial(validate_paths, [tmp], jobs=jobs), 3)
            print(f"validate_paths {N} files, jobs={jobs}      : {t:.3f} s  [{load()}]")

        one = str(ROOT / "playbooks" / "opening_straddle_chase.yaml")
        runner = shutil.which("runner")
        base = [sys.executable, "-m", "runner"] if runner is None else [runner]
        t_pass = cold([sys.executable, "-c", "pass"])
        t_help = cold([*base, "--help"])
        t_one = cold([*base, "validate", one])
        print(f"cold start baseline python -c pass    : {t_pass * 1000:.0f} ms  [{load()}]")
        print(
            f"cold start runner --help              : {t_help * 1000:.0f} ms  "
            f"({t_help / t_pass:.1f}x python; target <= 150 ms)  [{load()}]"
        )
        print(
            f"cold start runner validate one.yaml   : {t_one * 1000:.0f} ms  "
            f"({t_one / t_pass:.1f}x python; target <= 300 ms)  [{load()}]"
        )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
