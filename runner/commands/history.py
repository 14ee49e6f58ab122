"""``runner history``: past runs, newest first (``--json`` for machines)."""

from __future__ import annotations

import argparse

from runner.commands._shared import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--playbook", help="only runs of this playbook")
    parser.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    add_db_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from runner.journal import Journal

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
            r.started_at.strftime("%Y-%m-%d %H:%M:%SZ"),
            r.status.value,
            str(r.starts),
        )
        for r in runs
    ]
    headers = ("RUN", "PLAYBOOK", "ACCOUNT", "MODE", "STARTED", "STATUS", "STARTS")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
