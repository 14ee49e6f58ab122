"""``runner history``: past runs, newest first (``--json`` for machines)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json
from runner.commands.terminal import OUTCOME_COLOR, table
from runner.timefmt import shared_zone, when

EXAMPLES = """\
  runner history --playbook opening-straddle --limit 5
  runner history --json | jq -r '.[] | select(.status == "failed") | .run_id'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--playbook", metavar="NAME", help="only runs of this playbook (its `name:`)")
    parser.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most this many runs (default 50)"
    )
    add_db_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from runner.journal.fires import FireStore
    from runner.journal.store import Journal

    journal = Journal(args.db)
    runs = journal.list_runs(limit=args.limit, playbook=args.playbook)
    # Daemon fires that never became a run (a closed day, halted, missed): shown among the runs, newest
    # first, so a skip is not only a line on the daemon's stderr.
    skipped = FireStore(journal.engine, owner="history").not_run(args.playbook, args.limit)
    items: list[tuple[dt.datetime, dict[str, Any]]] = [
        (
            r.started_at,
            {
                "kind": "run",
                "run_id": r.run_id,
                "playbook": r.playbook,
                "account": r.account,
                "mode": r.mode,
                "scheduled_for": r.scheduled_for.isoformat(),
                "started_at": r.started_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "starts": r.starts,
                "status": r.status.value,
                "message": r.message,
                "timezone": r.timezone,
            },
        )
        for r in runs
    ]
    items += [
        (
            f.scheduled_for,
            {
                "kind": "fire",
                "run_id": f.run_id,
                "playbook": f.playbook,
                "account": None,
                "mode": "serve",
                "scheduled_for": f.scheduled_for.isoformat(),
                "started_at": None,
                "finished_at": f.updated_at.isoformat(),
                "starts": 0,
                "status": f.state.value,
                "message": f.outcome,
                "timezone": None,  # a fire row does not carry its playbook's zone
            },
        )
        for f in skipped
    ]
    items.sort(key=lambda i: i[0], reverse=True)
    rows_out = [d for _, d in items[: args.limit]]
    if args.json:
        print_json(rows_out)
        return 0
    if not rows_out:
        print("no runs yet")
        return 0
    fallback = shared_zone(r.timezone for r in runs)  # fires shown in the runs' zone when they share one
    rows = [
        (
            d["run_id"],
            d["playbook"],
            d["account"] or "-",
            d["mode"],
            when(at, d["timezone"] or fallback),  # the run's playbook zone, named
            d["status"] + (f": {d['message']}" if d["kind"] == "fire" and d["message"] else ""),
            str(d["starts"]),
        )
        for at, d in items[: args.limit]
    ]
    headers = ("RUN", "PLAYBOOK", "ACCOUNT", "MODE", "STARTED", "STATUS", "STARTS")
    table(headers, rows, sys.stdout, colors=(None,) * 5 + (_color,))
    return 0


def _color(status: str) -> str | None:
    return OUTCOME_COLOR.get(status.split(":", 1)[0])
