"""``runner history``: past runs, newest first (``--json`` for machines)."""

from __future__ import annotations

import argparse
import sys

from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json
from runner.commands.terminal import OUTCOME_COLOR, table
from runner.timefmt import when

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
    from runner.journal.store import Journal

    runs = Journal(args.db).list_runs(limit=args.limit, playbook=args.playbook)
    if args.json:
        print_json(
            [
                {
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
                }
                for r in runs
            ]
        )
        return 0
    if not runs:
        print("no runs yet")
        return 0
    rows = [
        (
            r.run_id,
            r.playbook,
            r.account,
            r.mode,
            when(r.started_at, r.timezone),  # in the run's playbook zone, named
            r.status.value,
            str(r.starts),
        )
        for r in runs
    ]
    headers = ("RUN", "PLAYBOOK", "ACCOUNT", "MODE", "STARTED", "STATUS", "STARTS")
    table(headers, rows, sys.stdout, colors=(None,) * 5 + (OUTCOME_COLOR.get,))
    return 0
