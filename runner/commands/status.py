"""``runner status``: kill-switch state (with each account's last halt cancel pass: cancelled / still
open), running daemons, next fire per playbook, fires running now (with the step each is on), and each
playbook's last outcome. Read from the journal database, which every
daemon updates each second, so it works from any process. ``--json`` for scripts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

DESCRIPTION = __doc__
EXAMPLES = """\
  runner status
  runner status --json | jq .control.mode     # "normal", "halt" or "reduce_only"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def collect(db_url: str | None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The status JSON: one builder shared with the status page's API (runner/web/snapshot.py)."""
    from runner.journal.fires import open_engine
    from runner.web.snapshot import build_status

    return build_status(open_engine(db_url), now)


def run(args: argparse.Namespace) -> int:
    from runner.timefmt import when

    data = collect(args.db)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    # Every time in its playbook's zone; the kill switch, heartbeats and cancel passes (no one playbook's)
    # in the zone the playbooks share, else UTC; every one names its zone.
    zones = {n: i.get("timezone") for n, i in data["next_fires"].items()}
    zones |= {n: r.get("timezone") or zones.get(n) for n, r in data["last_outcomes"].items()}
    dz = data["timezone"]
    c = data["control"]
    mode = {"normal": "normal (orders allowed)", "halt": "HALTED", "reduce_only": "REDUCE-ONLY"}[c["mode"]]
    extra = (
        f" since {when(c['since'], dz)} by {c['by']}" + (f": {c['reason']}" if c["reason"] else "")
        if c["halted"]
        else ""
    )
    print(f"kill switch: {mode}{extra}")
    _print_cancels(c, data["halt_cancels"], dz)
    live = [d for d in data["daemons"] if d["alive"]]
    if not live:
        gone = data["daemons"][0] if data["daemons"] else None
        print(
            "daemon: none running"
            + (f" (last: {gone['daemon_id']}, heartbeat {when(gone['heartbeat_at'], dz)})" if gone else "")
        )
    for d in live:
        print(
            f"daemon: {d['daemon_id']} pid {d['pid']} on {d['host']}, {d['playbook_dir']}, "
            f"{len(d['playbooks'])} playbooks, {len(d['invalid'])} invalid"
        )
        for path, errors in d["invalid"].items():
            print(f"  invalid {path}: {errors[0] if errors else ''}")
    if len(data["members"]) > 1:
        print("members (playbooks owned):")
        for m in data["members"]:
            print(f"  {m['daemon_id']:<40} {m['owns']:>6}  e.g. {', '.join(m['sample']) or '-'}")
    if data["claims_in_flight"]:
        print("claims in flight:")
        for f in data["claims_in_flight"]:
            lease = when(f["lease_expires"], dz) if f["lease_expires"] else "no lease"
            took = f", taken over from {f['taken_from']}" if f["taken_from"] else ""
            print(
                f"  {f['playbook']:<28} {when(f['scheduled_for'], zones.get(f['playbook']) or dz)}  "
                f"{f['state']:<8} held by {f['holder']}, lease until {lease}{took}"
            )
    if data["next_fires"]:
        print("next fires:")
        for name, info in data["next_fires"].items():
            nxt = when(info["next_fire"], info["timezone"]) if info["next_fire"] else "none"
            print(
                f"  {name:<28} {nxt:<24} {info['timezone']}"
                + (f" calendar {info['calendar']}" if info.get("calendar") else "")
            )
            for skip in info.get("skips", []):  # closed-day fires before it, journaled at their instant
                print(f"    skips {when(skip['at'], info['timezone'])}: {skip['reason']}")
    if data["running"]:
        print("running:")
        for r in data["running"]:
            print(
                f"  {r['playbook']:<28} run {r['run_id']} step {r.get('current_step') or '-'} "
                f"(started {when(r['started_at'], zones.get(r['playbook']) or dz)})"
            )
    if data["dead_runs"]:
        print("dead runs (still marked running; closed by the account's next run, apply or serve):")
        for r in data["dead_runs"]:
            print(f"  {r['playbook']:<28} run {r['run_id']} on {r['account']}: {r['why']}")
    if data["last_outcomes"]:
        print("last outcomes:")
        for name, r in data["last_outcomes"].items():
            at = when(r["scheduled_for"], zones.get(name) or dz)
            print(f"  {name:<28} {at}  {r['state']:<10} {r['outcome'] or ''}")
    return 0


def _print_cancels(control: dict[str, Any], passes: list[dict[str, Any]], dz: Any) -> None:
    """The latest halt cancel pass per account; while halted, those from before this halt are marked."""
    from runner.timefmt import when

    since = dt.datetime.fromisoformat(control["since"]) if control["mode"] == "halt" else None
    before = {p["account"] for p in passes if since and dt.datetime.fromisoformat(p["at"]) < since}
    current = [p for p in passes if p["account"] not in before]
    if since is not None and not current:
        print("  open orders: no cancel pass since this halt (`runner halt --cancel-now` runs one)")
    if not passes:
        return
    print("halt cancel passes (latest per account):")
    for p in passes:
        old = " (before this halt)" if p["account"] in before else ""
        what = (
            f"FAILED: {p['error']}"
            if p["error"] and not p["open_before"]
            else f"{p['cancelled']} cancelled, {p['still_open']} still open of {p['open_before']}"
            + (f"; error: {p['error']}" if p["error"] else "")
        )
        print(f"  {p['account']:<20} {when(p['at'], dz)}  {what}  run {p['run_id'] or '-'}{old}")
