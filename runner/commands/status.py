"""``runner status``: kill-switch state (with each account's last halt cancel pass: cancelled / still
open), running daemons, next fire per playbook, fires running now (with the step each is on), and each
playbook's last outcome. Read from the journal database, which every
daemon updates each second, so it works from any process. ``--json`` for scripts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

DESCRIPTION = __doc__
EXAMPLES = """\
  runner status
  runner status --json | jq .control.mode     # "normal", "halt" or "reduce_only"
"""
STALE = dt.timedelta(seconds=5)  # a daemon silent this long is reported as not running


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def collect(db_url: str | None, now: dt.datetime | None = None) -> dict[str, Any]:
    from runner.daemon.scale_status import scale_view
    from runner.engine.killswitch import ControlStore
    from runner.journal.fires import FireStore, open_engine, read_daemons
    from runner.journal.records import dead_holder
    from runner.journal.store import Journal

    now = now or dt.datetime.now(dt.UTC)
    engine = open_engine(db_url)
    daemons: list[dict[str, Any]] = []
    for d in read_daemons(engine):
        alive = d["stopped_at"] is None and now - d["heartbeat_at"] < STALE
        if not alive and daemons:
            continue  # show only the most recent dead one, for "when did it stop"
        status = d["status"]
        daemons.append(
            {
                "daemon_id": d["daemon_id"],
                "host": d["host"],
                "pid": d["pid"],
                "alive": alive,
                "playbook_dir": d["playbook_dir"],
                "heartbeat_at": d["heartbeat_at"].isoformat(),
                "stopped_at": d["stopped_at"].isoformat() if d["stopped_at"] else None,
                "playbooks": status.get("playbooks", {}),
                "running": status.get("running", []),
                "invalid": status.get("invalid", {}),
            }
        )
    live = [d for d in daemons if d["alive"]]
    running = [r for d in live for r in d["running"]]
    _add_current_steps(engine, running)
    store = FireStore(engine, owner="status")  # read-only use
    journal = Journal(engine=engine)
    last = {
        name: {
            "scheduled_for": r.scheduled_for.isoformat(),
            "state": r.state.value,
            "outcome": r.outcome,
            "run_id": r.run_id,
            "timezone": _run_zone(journal, r.run_id),
        }
        for name, r in sorted(store.last_outcomes().items())
    }
    next_fires: dict[str, Any] = {}
    for d in live:
        for name, info in d["playbooks"].items():
            if name not in next_fires or (info["next_fire"] or "~") < (next_fires[name]["next_fire"] or "~"):
                next_fires[name] = info
    control = ControlStore(engine)
    dead = [
        {
            "run_id": r.run_id,
            "playbook": r.playbook,
            "account": r.account,
            "started_at": r.started_at.isoformat(),
            "timezone": r.timezone,
            "why": dead_holder(r),
        }
        for r in journal.dead_runs()
    ]  # read-only: closed by the account's next run, apply or serve
    zones = [i.get("timezone") for i in next_fires.values()] + [v["timezone"] for v in last.values()]
    return {
        "now": now.isoformat(),
        "timezone": display_zone(engine, zones).key,  # of the times that are no one playbook's
        "dead_runs": dead,
        "control": control.get().as_dict(),
        "halt_cancels": [p.as_dict() for p in control.last_passes()],
        "daemons": daemons,
        "next_fires": dict(sorted(next_fires.items())),
        "running": running,
        "last_outcomes": last,
        **scale_view(engine, daemons),  # members, what each owns, claims in flight (issue 16)
    }


def display_zone(engine: Any, playbook_zones: Iterable[str | None] = ()) -> Any:
    """Zone for times that are no one playbook's (the kill switch, heartbeats, cancel passes): the one
    the running daemons' playbooks and the journal's recent runs share, else UTC; named either way."""
    from runner.journal.store import Journal
    from runner.timefmt import shared_zone

    recent = [r.timezone for r in Journal(engine=engine).list_runs(limit=50)]
    return shared_zone([*playbook_zones, *recent])


def _run_zone(journal: Any, run_id: str | None) -> str | None:
    run = journal.get_run(run_id) if run_id else None
    return run.timezone if run is not None else None


def _add_current_steps(engine: Any, running: list[dict[str, Any]]) -> None:
    if not running:
        return
    from runner.journal.store import Journal

    journal = Journal(engine=engine)
    for r in running:
        steps = journal.steps_of(r["run_id"])
        current = [s.step_id for s in steps.values() if s.finished_at is None]
        r["current_step"] = current[0] if current else None
        r["steps_done"] = sum(1 for s in steps.values() if s.finished_at is not None)


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
