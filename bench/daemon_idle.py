"""A daemon's fixed cost (issue 16): CPU seconds per `runner serve` daemon per minute while nothing is
due, 1 daemon and 3 daemons on one PostgreSQL journal over a directory of N playbooks (none due within
the window), and where it goes.

Every run is on a fresh database of a throwaway PostgreSQL server, real processes, the accounts on
`runner sim kotak_neo` (never called: nothing is due). The window opens once every daemon has loaded
every playbook (its status row lists them all) and a few seconds have settled.

    python bench/daemon_idle.py [--playbooks 3000] [--accounts 100] [--seconds 30] [--profile FILE]

``--profile FILE``: py-spy samples the first daemon of the 3 through the window (every thread, idle
samples dropped); FILE gets the collapsed stacks and the top functions by own and total samples are
printed. The ratio printed is 3 daemons' total idle CPU over one daemon's (the fixed cost a daemon adds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import PgCluster, _server_user, find_pg_bindir
from helpers.cluster import Cluster, Sim, write_playbooks
from scaleout import cpu_seconds, print_profile

UTC = dt.UTC


def one_run(
    pg: PgCluster, root: Path, sim: Sim, daemons: int, n: int, seconds: float, profile: Path | None
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"idle{daemons}-"))
    cluster = Cluster(tmp, pg.url(pg.create_database("idle")), sim)
    try:
        later = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        write_playbooks(cluster.pbdir, [f"p{i:05d}" for i in range(n)], later, sim.names)
        cluster.start(daemons, lead=4.0)
        members = cluster.wait_members(daemons, timeout=300)
        cluster.wait_loaded(daemons, n)
        time.sleep(5.0)  # start-up work (catch-up, broker opening, first rebalance) settles
        pids = sorted(members.values())
        spy = None
        if profile is not None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen(
                [exe, "record", "--pid", str(pids[0]), "--duration", str(int(seconds)), "--format", "raw",
                 "--threads", "--rate", "200", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        cpu0 = {pid: cpu_seconds(pid) for pid in pids}
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
        elapsed = time.monotonic() - t0
        if spy is not None:
            _, err = spy.communicate(timeout=120)
            if spy.returncode != 0:
                print(f"py-spy failed: {err.decode(errors='replace')[-400:]}", file=sys.stderr)
        per_min = [c / elapsed * 60 for c in cpu.values()]
        return {"daemons": daemons, "per_daemon_per_min": per_min, "total_per_min": sum(per_min)}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--playbooks", type=int, default=3000, help="playbooks in the directory (default 3000)")
    ap.add_argument("--accounts", type=int, default=100, help="accounts they spread over (default 100)")
    ap.add_argument("--seconds", type=float, default=30.0, help="idle window measured (default 30)")
    ap.add_argument("--profile", type=Path, help="py-spy collapsed stacks of one of the 3 daemons here")
    args = ap.parse_args(argv)
    bindir = find_pg_bindir()
    if bindir is None:
        print("no PostgreSQL server binaries (initdb/pg_ctl)", file=sys.stderr)
        return 5
    root = Path(tempfile.mkdtemp(prefix="runner-idle-", dir="/tmp"))
    pg = PgCluster(bindir, Path(tempfile.mkdtemp(prefix="runner-pg-", dir="/tmp")), _server_user())
    pg.start()
    sim = Sim(root, args.accounts)
    try:
        one = one_run(pg, root, sim, 1, args.playbooks, args.seconds, None)
        three = one_run(pg, root, sim, 3, args.playbooks, args.seconds, args.profile)
    finally:
        sim.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"idle daemons on PostgreSQL: {args.playbooks} playbooks over {args.accounts} accounts, none due; "
        f"{args.seconds:g} s window"
    )
    for r in (one, three):
        each = ", ".join(f"{c:.2f}" for c in r["per_daemon_per_min"])
        total = r["total_per_min"]
        print(f"  {r['daemons']} daemon(s): CPU s per daemon per minute [{each}], total {total:.2f}")
    print(f"  idle CPU 3 daemons / 1 daemon: {three['total_per_min'] / one['total_per_min']:.2f}x")
    if args.profile is not None and args.profile.exists():
        print_profile(args.profile, "one of the 3, idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
