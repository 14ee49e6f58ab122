"""Parse time and memory of a Kotak ``nse_fo`` scrip master of realistic size (~90,000 rows), generated in
the real format (the official header, 1980-based expiry epochs, strikes and ticks x100) by the simulator's
own writer, next to a baseline in the same process: ``csv.reader`` over the same bytes (no conversion).

    python bench/masters.py [--rows 90000] [--rounds 3]

Prints the best parse time, the ratio to the baseline, the target (<= 1 s), and the traced memory of the
loaded InstrumentMaster (tracemalloc).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import time
import tracemalloc
from decimal import Decimal

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.master import FORMAT
from runner.brokers.kotak_neo.sim_master import segment_csv
from runner.brokers.masters import MasterFile
from runner.model import Instrument, OptionType

UNDERLYINGS = 180  # index and stock underlyings, ~500 contracts each -> ~90,000 rows


def generate(n_rows: int) -> bytes:
    rows: list[MasterRow] = []
    token = 35000
    expiries = [dt.date(2026, 2, 24) + dt.timedelta(days=7 * i) for i in range(5)]
    per = max(1, n_rows // (UNDERLYINGS * len(expiries) * 2))
    for u in range(UNDERLYINGS):
        name = f"SYM{u:03d}" if u else "NIFTY"
        base = Decimal(100 + 137 * u)
        for expiry in expiries:
            token += 1
            rows.append(
                MasterRow(
                    Instrument(
                        "NFO", name, expiry, lot_size=65, tick_size=Decimal("0.05"), freeze_quantity=1820
                    ),
                    str(token),
                    f"{name}{expiry:%y%b}FUT".upper(),
                )
            )
            for k in range(per):
                for opt in (OptionType.CE, OptionType.PE):
                    if len(rows) >= n_rows:
                        break
                    token += 1
                    strike = base + Decimal(k) * Decimal("2.5")
                    rows.append(
                        MasterRow(
                            Instrument("NFO", name, expiry, strike, opt, 65, Decimal("0.05"), 1820),
                            str(token),
                            f"{name}{expiry:%y%b}{strike}{opt.value}".upper(),
                        )
                    )
    return segment_csv(rows[:n_rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=90_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    content = generate(args.rows)
    file = MasterFile("nse_fo.csv", content)
    baseline = parse = parse_only = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        n_base = sum(1 for _ in csv.reader(io.StringIO(content.decode()))) - 1
        baseline = min(baseline, time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = list(FORMAT.parse([file]))
        parse_only = min(parse_only, time.perf_counter() - t0)
        t0 = time.perf_counter()
        master = InstrumentMaster(FORMAT.parse([file]), broker="kotak_neo")
        parse = min(parse, time.perf_counter() - t0)
        del rows
    tracemalloc.start()
    master = InstrumentMaster(FORMAT.parse([file]), broker="kotak_neo")
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"kotak nse_fo master: {len(master):,} rows ({n_base:,} in the file, {len(content) / 1e6:.1f} MB)")
    print(
        f"parse + load: {parse * 1000:.0f} ms (target <= 1000 ms);"
        f" csv.reader baseline {baseline * 1000:.0f} ms;"
        f" ratio {parse / baseline:.1f}x"
    )
    print(f"parse alone (rows, no index): {parse_only * 1000:.0f} ms; ratio {parse_only / baseline:.1f}x")
    print(
        f"memory of the loaded InstrumentMaster: {current / 1e6:.1f} MB ({current / len(master):.0f} B/row)"
    )


if __name__ == "__main__":
    main()
