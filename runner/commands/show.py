"""``runner show RUN_ID``: one run's steps, orders (with status transitions), fills, errors and broker
call counts. A unique prefix of the run id is enough. ``--json`` for machines."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from runner.commands._shared import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID")
    add_db_argument(parser)
    add_json_argument(parser)


def collect(journal: Any, run_id: str) -> dict[str, Any]:
    from runner.journal import events, fills

    run = journal.get_run(run_id)
    steps = journal.steps_of(run_id)
    intents = journal.intents(run_id=run_id)
    calls = journal.calls(run_id=run_id)
    return {
        "run": {
            "run_id": run.run_id,
            "playbook": run.playbook,
            "account": run.account,
            "mode": run.mode,
            "scheduled_for": run.scheduled_for.isoformat(),
            "status": run.status.value,
            "starts": run.starts,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
        "steps": [
            {
                "id": s.step_id,
                "kind": s.kind,
                "outcome": s.outcome.value,
                "message": s.message,
                "started_at": s.started_at.isoformat(),
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in steps.values()
        ],
        "orders": [
            {
                "client_order_id": i.client_order_id,
                "step": i.step_id,
                "leg": i.leg,
                "attempt": i.attempt,
                "purpose": i.purpose.value,
                "instrument": i.request.instrument.key,
                "side": i.request.side.value,
                "quantity": i.request.quantity,
                "type": i.request.order_type.value,
                "price": str(i.request.price) if i.request.price is not None else None,
                "status": i.status.value,
                "resolution": i.resolution.value,
                "broker_order_id": i.broker_order_id,
                "filled_quantity": i.filled_quantity,
                "average_price": str(i.average_price) if i.average_price is not None else None,
                "transitions": [
                    f"{t['old_status']}->{t['new_status']}{'' if t['legal'] else ' (ILLEGAL)'}"
                    for t in journal.transitions(i.client_order_id)
                ],
            }
            for i in intents
        ],
        "fills": [
            {
                "client_order_id": f["client_order_id"],
                "quantity": f["quantity"],
                "price": str(f["price"]),
                "at": f["at"].isoformat(),
            }
            for f in journal.rows(fills, run_id)
        ],
        "errors": [
            {
                "step": e["step_id"],
                "level": e["level"],
                "kind": e["kind"],
                "message": e["message"],
                "at": e["at"].isoformat(),
            }
            for e in journal.rows(events, run_id)
            if e["level"] != "info"
        ]
        + [
            {
                "step": c["step_id"],
                "level": "error",
                "kind": c["method"],
                "message": f"{c['error']}: {c['error_message']}",
                "at": c["at"].isoformat(),
            }
            for c in calls
            if c["error"]
        ],
        "broker_calls": dict(Counter(c["method"] for c in calls)),
    }


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_USAGE
    from runner.journal import Journal

    journal = Journal(args.db)
    matches = journal.find_runs(args.run_id)
    if len(matches) != 1:
        print(
            f"runner show: {'no run' if not matches else f'{len(matches)} runs'} match {args.run_id!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    data = collect(journal, matches[0].run_id)
    if args.json:
        print_json(data)
        return 0
    r = data["run"]
    print(
        f"run {r['run_id']}  {r['playbook']} on {r['account']} ({r['mode']})  {r['status']}"
        f"  starts={r['starts']}"
    )
    print(f"  scheduled {r['scheduled_for']}  started {r['started_at']}  finished {r['finished_at']}")
    print("steps:")
    for s in data["steps"]:
        print(f"  {s['id']:<16} {s['kind']:<11} {s['outcome']:<10} {s['message'] or ''}")
    print("orders:")
    for o in data["orders"]:
        px = f" @{o['price']}" if o["price"] else ""
        fill = f" filled {o['filled_quantity']}@{o['average_price']}" if o["filled_quantity"] else ""
        print(
            f"  {o['client_order_id']} {o['step']}/{o['leg']}.{o['attempt']} {o['side']} {o['quantity']} "
            f"{o['instrument']} {o['type']}{px} {o['status']}{fill}  [{' '.join(o['transitions'])}]"
        )
    print(
        f"fills: {len(data['fills'])}  broker calls: "
        + ", ".join(f"{k}={v}" for k, v in sorted(data["broker_calls"].items()))
    )
    if data["errors"]:
        print("errors:")
        for e in data["errors"]:
            print(f"  {e['at']} {e['step'] or '-'} {e['kind']}: {e['message']}")
    return 0
