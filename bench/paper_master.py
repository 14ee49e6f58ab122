"""What the paper broker's generated instrument master costs a run, in milliseconds, next to a baseline
measured in the same process: what every ``runner run`` on paper pays anyway before its first order
(loading and validating a shipped playbook, ``playbooks/opening_straddle_chase.yaml``, and building the
paper broker, ``create(PAPER)`` on an in-memory database).

    python bench/paper_master.py [--days 5]

* first resolve: a NIFTY option on a fresh day (builds NIFTY's chain only: what a run's first order pays);
* full master: every underlying's chain (what ``download`` pays, once per day per process);
* simulator master: a simulator's default master (its own rows plus every generated one; per sim start);
* resolve: one lookup once built.
Each figure is the median over ``--days`` distinct trading days (one build per day, as cached).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from decimal import Decimal
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()

    from runner.accounts import PAPER
    from runner.brokers.kotak_neo.sim import default_master
    from runner.brokers.paper.broker import create
    from runner.brokers.paper.master import GeneratedMaster, _calendar
    from runner.model import Instrument, OptionType
    from runner.playbook.validate import load_playbook

    example = Path(__file__).resolve().parents[1] / "playbooks" / "opening_straddle_chase.yaml"

    _calendar("NSE"), _calendar("BSE")  # loaded once per process by anything that checks sessions
    days = [dt.date(2026, 12, 1) + dt.timedelta(days=7 * k) for k in range(args.days)]
    base, first, full, lookup, sim = [], [], [], [], []
    for day in days:
        t0 = time.perf_counter()
        load_playbook(example)
        create(PAPER, db_url="sqlite://")
        base.append(time.perf_counter() - t0)
        expiry = GeneratedMaster(day).expiries("NFO", "NIFTY")[-1]
        ins = Instrument("NFO", "NIFTY", expiry, Decimal(24500), OptionType.CE)
        m = GeneratedMaster(day)
        t0 = time.perf_counter()
        m.resolve(ins)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m.resolve(ins)
        lookup.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = len(GeneratedMaster(day))
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        default_master()  # today's: built above by an earlier call or here, then merged
        sim.append(time.perf_counter() - t0)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(f"baseline load_playbook+create:   {ms(base):8.2f} ms")
    print(f"first resolve (NIFTY chain):     {ms(first):8.2f} ms  ratio {ms(first) / ms(base):.2f}x baseline")
    print(f"full master ({n} rows):       {ms(full):8.2f} ms  ratio {ms(full) / ms(base):.2f}x baseline")
    print(f"simulator default master:        {ms(sim):8.2f} ms  ratio {ms(sim) / ms(base):.2f}x baseline")
    print(f"resolve once built:              {ms(lookup) * 1000:8.2f} us")


if __name__ == "__main__":
    main()
