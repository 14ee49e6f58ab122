"""First-request lateness at one instant, measured three ways (issue 16): N playbooks due at one instant,
real `runner serve` processes on a throwaway PostgreSQL, sending through `runner sim BROKER` over HTTP
(``--broker``: kotak_neo by default, blitz or odin; each serves through runner.brokers.sim_front).

For every fire, relative to the instant:

* ``reply``: the daemon's ``order_send`` log line (what bench/scaleout.py reports; for an armed first
  order it is written once ``place`` returned, i.e. after the broker's reply);
* ``left``: the last byte of its place request written to the socket (aiohttp ``on_request_chunk_sent``,
  via bench/probe/sitecustomize.py in the daemon processes);
* ``arrived``: its place request reaching the simulator (``GET /_sim/arrivals``). Precisely: the wall
  time at which the simulator's event loop (uvloop when installed, runner.brokers.sim_loop) read the
  request's bytes off its socket (runner.brokers.sim_arrival: a stamp in ``data_received``, ahead of
  aiohttp's parser), not when its handler's turn came: during a burst that turn queues behind the other
  requests' handlers, which is the simulator's cost, not the runner's. Kernel accept/receive queueing
  before the loop reads the socket is still in the figure (the baseline shows what this box allows).

Baseline, same process, same simulator, same accounts: the same N place requests sent at one instant by
the broker's adapter alone (logged in and its connections opened beforehand, no engine, no journal) -
what this box and this simulator can do at best. Ratio = runner p99 / baseline p99. Measured twice: built
at the instant (the ordinary path), and primed beforehand as the daemon's armed runs are
(runner.brokers.primed); the ratio uses the primed one.

    python bench/lateness.py [--broker kotak_neo|blitz|odin] [--fires 150] [--accounts 10] [--daemons 1 3]
                             [--profile DIR]

``--profile DIR`` runs each daemon's event loop under cProfile for 0.5 s from the instant (dumped to
DIR/instant.prof.<pid>.<n>).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import PgCluster, _server_user, find_pg_bindir
from helpers.cluster import Cluster, Sim, burst_instant, environ, write_playbooks
from scaleout import client_ids, p, sends
from scaleout import sim_arrivals as arrivals

from runner.journal.fires import FireState

HERE = Path(__file__).resolve().parent
UTC = dt.UTC


BROKERS = ("kotak_neo", "blitz", "odin")  # the HTTP simulators with GET /_sim/arrivals


def wire_id(broker: str, client_id: str) -> str:
    """The id the simulator and the probe see for ``client_id``: ODIN carries a 10-character form."""
    if broker == "odin":
        from runner.brokers.odin.wire import order_identifier

        return order_identifier(client_id)
    return client_id


def by_client_id(broker: str, ids: list[str], stamps: dict[str, float]) -> dict[str, float]:
    keyed = {c: wire_id(broker, c) for c in ids}
    return {c: stamps[w] for c, w in keyed.items() if w in stamps}


def lefts(folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in folder.glob("left-*.tsv"):
        for line in f.read_text().splitlines():
            cid, _, when = line.partition("\t")
            out.setdefault(cid, float(when))
    return out


def summary(label: str, t0: float, ids: list[str], when: dict[str, float]) -> dict[str, float]:
    late = sorted((when[c] - t0) * 1000 for c in ids if c in when)
    return {
        "n": len(late),
        "first": late[0] if late else float("nan"),
        "p50": p(late, 50),
        "p99": p(late, 99),
        "max": late[-1] if late else float("nan"),
    }


def line(label: str, s: dict[str, float]) -> str:
    return (
        f"    {label:<9} n={s['n']:<5.0f} first {s['first']:7.1f}  p50 {s['p50']:7.1f}  p99 {s['p99']:7.1f}  "
        f"max {s['max']:7.1f} ms"
    )


def runner_run(
    pg: PgCluster, root: Path, sim: Sim, daemons: int, fires: int, lead: float, profile: Path | None
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"d{daemons}-"))
    probe = tmp / "probe"
    probe.mkdir()
    url = pg.url(pg.create_database("bench"))
    cluster = Cluster(tmp, url, sim)
    overlay = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "probe"), os.environ.get("PYTHONPATH")])),
        "RUNNER_PROBE_DIR": str(probe),
    }
    if profile is not None:
        overlay["RUNNER_PROFILE_INSTANT"] = str(profile / "instant.prof")
    with environ(overlay):
        cluster.start(daemons, lead=lead)
    try:
        cluster.wait_members(daemons, timeout=120)
        time.sleep(1.5)
        instant, _ = burst_instant(lead, fires)
        names = [f"l{daemons}-{i:04d}" for i in range(fires)]
        write_playbooks(cluster.pbdir, names, instant, sim.names)
        rows = cluster.settled(instant, fires, 240)
        ids = client_ids(cluster, {r.run_id for r in rows})
        t0 = instant.timestamp()
        reply = {cid: w for cid, (w, _) in sends(cluster).items()}
        return {
            "fires": fires,
            "succeeded": sum(1 for r in rows if r.state is FireState.SUCCEEDED),
            "arrived": summary("arrived", t0, ids, by_client_id(sim.broker, ids, arrivals(sim))),
            "left": summary("left", t0, ids, by_client_id(sim.broker, ids, lefts(probe))),
            "reply": summary("reply", t0, ids, reply),
        }
    finally:
        cluster.stop()


async def _baseline(
    sim: Sim, fires: int, tag: str, primed: bool
) -> tuple[float, list[str], dict[str, float]]:
    """The adapter alone: ``fires`` market orders over the sim's accounts, sent at one instant; with
    ``primed``, each built and connected beforehand as the daemon's armed runs are (runner.brokers.primed)."""
    from runner.accounts import load_accounts
    from runner.brokers.registry import create_broker
    from runner.model import Instrument, OrderRequest, Side

    accounts = load_accounts(sim.file)
    brokers = [create_broker(accounts[n]) for n in sim.names]
    for b in brokers:
        await b.connect()
    per = -(-fires // len(brokers))
    # as the daemon does while preparing (an older adapter without it: the bench still runs, unwarmed)
    await asyncio.gather(*(b.warm_connections(per) for b in brokers if hasattr(b, "warm_connections")))
    instrument = Instrument("NSE", "RELIANCE")
    reqs = [
        (brokers[i % len(brokers)], OrderRequest(f"{tag}{i:05d}", instrument, Side.BUY, 1))
        for i in range(fires)
    ]
    if primed:
        await asyncio.gather(*(b.prime(r) for b, r in reqs if hasattr(b, "prime")))
    t0 = time.time() + 1.0
    await asyncio.sleep(t0 - time.time())
    done: dict[str, float] = {}

    async def one(b: Any, r: OrderRequest) -> None:
        await b.place(r)
        done[r.client_order_id] = time.time()

    await asyncio.gather(*(one(b, r) for b, r in reqs))
    for b in brokers:
        await b.close()
    return t0, [r.client_order_id for _, r in reqs], done


def baseline(sim: Sim, root: Path, fires: int, tag: str, primed: bool = True) -> dict[str, Any]:
    with environ(sim.env):
        t0, ids, done = asyncio.run(_baseline(sim, fires, tag, primed))
    left = by_client_id(sim.broker, ids, lefts(root / "probe-main"))
    return {
        "fires": fires,
        "arrived": summary("arrived", t0, ids, by_client_id(sim.broker, ids, arrivals(sim))),
        "left": summary("left", t0, ids, left),
        "reply": summary("reply", t0, ids, done),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=BROKERS, default="kotak_neo", help="whose simulator (kotak_neo)")
    ap.add_argument("--fires", type=int, default=150, help="playbooks due at the one instant (default 150)")
    ap.add_argument("--accounts", type=int, default=10, help="accounts on the simulator (default 10)")
    ap.add_argument(
        "--daemons", type=int, nargs="+", default=[1, 3], help="runs, by daemon count (default 1 3)"
    )
    ap.add_argument("--lead", type=float, default=4.0, help="serve --lead seconds (default 4)")
    ap.add_argument("--profile", type=Path, help="profile each daemon's first 0.5 s from the instant, here")
    args = ap.parse_args(argv)
    bindir = find_pg_bindir()
    if bindir is None:
        print("no PostgreSQL server binaries (initdb/pg_ctl)", file=sys.stderr)
        return 5
    root = Path(tempfile.mkdtemp(prefix="runner-lateness-", dir="/tmp"))
    (root / "probe-main").mkdir()
    os.environ["RUNNER_PROBE_DIR"] = str(root / "probe-main")  # this process's own adapter (baseline)
    sys.path.insert(0, str(HERE / "probe"))
    import sitecustomize as probe

    probe._install_probe(str(root / "probe-main"))
    del os.environ["RUNNER_PROBE_DIR"]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    pg = PgCluster(bindir, Path(tempfile.mkdtemp(prefix="runner-pg-", dir="/tmp")), _server_user())
    pg.start()
    sim = Sim(root, args.accounts, args.broker)
    results = []
    try:
        ordinary = baseline(sim, root, args.fires, "bord", primed=False)
        base = baseline(sim, root, args.fires, "base")
        for n in args.daemons:
            results.append((n, runner_run(pg, root, sim, n, args.fires, args.lead, args.profile)))
    finally:
        sim.stop()
        pg.stop()
    print(
        f"first-request lateness on PostgreSQL via runner sim {args.broker} (HTTP): {args.fires} fires due "
        f"at one instant, {args.accounts} accounts, serve --lead {args.lead:g} (ms after the instant)"
    )
    print(f"  baseline: the {args.broker} adapter alone, logged in and warmed, the same requests at once")
    print("   ordinary (built at the instant):")
    for k in ("left", "arrived", "reply"):
        print(line(k, ordinary[k]))
    print("   primed (built and connected beforehand, as armed runs are; the ratios below use this one):")
    for k in ("left", "arrived", "reply"):
        print(line(k, base[k]))
    for n, r in results:
        print(f"  {n} daemon{'s' if n > 1 else ''}: {r['succeeded']}/{r['fires']} fires succeeded")
        for k in ("left", "arrived", "reply"):
            print(line(k, r[k]))
        ratio = r["arrived"]["p99"] / base["arrived"]["p99"] if base["arrived"]["p99"] > 0 else float("nan")
        print(f"    p99 arrived vs baseline: {ratio:.2f}x (target p99 <= 100 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
