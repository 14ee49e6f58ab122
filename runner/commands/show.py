"""``runner show RUN_ID``: one run's steps, orders (with status transitions), fills, errors and broker
call counts. A unique prefix of the run id is enough. ``--json`` for machines.

Nothing here asks the broker: an order that is not final shows the journal's state with its as-of time
(the intent's last write, in the playbook's zone, zone named), as the broker may have moved it since."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from runner.cli import EXIT_USAGE, CommandError
from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json
from runner.commands.terminal import OUTCOME_COLOR, Term, table
from runner.plan.groups import GroupLabel, nest
from runner.timefmt import when
from runner.timefmt import zone as tz_of

EXAMPLES = """\
  runner show 20261201-0930            # a unique prefix of the run id is enough
  runner show 20261201-093000+0530-ab12cd34 --json | jq '.orders[] | {client_order_id, status}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="run id from `runner history` (or a unique prefix)")
    add_db_argument(parser)
    add_json_argument(parser)


def resume_hint(run: Any) -> str:
    """Re-running an interrupted run's remaining steps stays a human decision: say how."""
    return (
        "its remaining steps did not run; after checking the account, re-run them with "
        f"`runner run <{run.playbook} playbook file> --resume {run.run_id}` (finished steps are not "
        "repeated, orders in flight are looked up, never re-sent)"
    )


def collect(journal: Any, run_id: str) -> dict[str, Any]:
    from runner.journal.tables import RunStatus, events, fills
    from runner.liveness import describe

    run = journal.get_run(run_id)
    dead = run.status is RunStatus.RUNNING and not journal.holder_alive(run)
    steps = journal.steps_of(run_id)
    intents = journal.intents(run_id=run_id)
    calls = journal.calls(run_id=run_id)
    group_starts: dict[str, str] = {}  # a parallel group started when its first member did
    for s in sorted(steps.values(), key=lambda s: s.started_at):
        if s.parallel_group is not None:
            group_starts.setdefault(s.parallel_group, s.started_at.isoformat())
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
            "message": run.message,
            "owner": describe(run.owner) if run.owner else None,
            "dead": dead,
            "resume": resume_hint(run) if dead or run.status is RunStatus.INTERRUPTED else None,
            "timezone": run.timezone,
        },
        "steps": [
            {
                "id": s.step_id,
                "kind": s.kind,
                "outcome": s.outcome.value,
                "message": s.message,
                "started_at": s.started_at.isoformat(),
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                **(
                    {"group": {"id": s.parallel_group, "started_at": group_starts[s.parallel_group]}}
                    if s.parallel_group is not None
                    else {}
                ),
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
                "final": i.status.is_terminal,  # else the journal's last word, as of:
                "as_of": (i.updated_at or i.created_at).isoformat(),
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
        "instruments": resolved_rows(journal, run_id),
    }


def resolved_rows(journal: Any, run_id: str) -> list[dict[str, Any]]:
    """The run's rolling instruments as resolved (runner.journal.resolved): contract, rule, LTP used."""
    from runner.journal.resolved import ResolvedInstruments

    return [
        {
            "alias": r.alias,
            "instrument": r.instrument.key,
            "rule": r.rule,
            "underlying": r.underlying,
            "underlying_ltp": None if r.underlying_ltp is None else format(r.underlying_ltp, "f"),
            "lot_size": r.instrument.lot_size,
            "tick_size": None if r.instrument.tick_size is None else format(r.instrument.tick_size, "f"),
            "resolved_at": r.resolved_at.isoformat(),
        }
        for r in ResolvedInstruments(journal.engine).of_run(run_id).values()
    ]


def run(args: argparse.Namespace) -> int:
    from runner.journal.store import Journal

    journal = Journal(args.db)
    matches = journal.find_runs(args.run_id)
    if not matches:
        raise CommandError(EXIT_USAGE, f"no run matches {args.run_id!r} (see `runner history`)")
    if len(matches) > 1:
        some = ", ".join(m.run_id for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise CommandError(EXIT_USAGE, f"{len(matches)} runs match {args.run_id!r}: {some}")
    data = collect(journal, matches[0].run_id)
    if args.json:
        print_json(data)
        return 0
    out = sys.stdout
    term = Term(out)
    r = data["run"]
    zone = tz_of(r["timezone"])
    print(
        f"run {r['run_id']}  {r['playbook']} on {r['account']} ({r['mode']})  "
        f"{term.paint(r['status'], OUTCOME_COLOR.get(r['status']))}  starts={r['starts']}"
    )
    print(
        f"  scheduled {when(r['scheduled_for'], zone)}  started {when(r['started_at'], zone)}  "
        f"finished {when(r['finished_at'], zone)}"
    )
    if r["message"]:
        print(f"  {r['message']}")
    if r["dead"]:
        print(f"  {term.paint('dead', 'red')}: still marked running, but its process ({r['owner']}) is gone")
    if r["resume"]:
        print(f"  {r['resume']}")
    print("\nsteps:")
    if data["steps"]:
        rows = [(s["id"], s["kind"], s["outcome"], s["message"] or "") for s in data["steps"]]
        labels = [
            GroupLabel(s["group"]["id"], f"started {when(s['group']['started_at'], zone)}")
            if "group" in s
            else None
            for s in data["steps"]
        ]
        table(
            ("STEP", "KIND", "OUTCOME", "DETAIL"),
            nest(rows, labels, timing_col=3),
            out,
            indent="  ",
            colors=(None, None, OUTCOME_COLOR.get),
        )
    else:
        print("  none")
    if data["instruments"]:
        print("\nrolling instruments (resolved once, when first used):")
        table(
            ("ALIAS", "CONTRACT", "RULE", "UNDERLYING LTP", "RESOLVED"),
            [
                (
                    i["alias"],
                    i["instrument"],
                    i["rule"],
                    f"{i['underlying']} {i['underlying_ltp']}" if i["underlying"] else "-",
                    when(i["resolved_at"], zone),
                )
                for i in data["instruments"]
            ],
            out,
            indent="  ",
        )
    print("\norders:")
    if data["orders"]:
        order_rows = [
            (
                o["client_order_id"],
                f"{o['step']}/{o['leg']}.{o['attempt']}",
                o["side"],
                str(o["quantity"]),
                o["instrument"],
                o["type"] + (f" {o['price']}" if o["price"] else ""),
                o["status"] if o["final"] else f"{o['status']} (as of {when(o['as_of'], zone)})",
                f"{o['filled_quantity']} @ {o['average_price']}" if o["filled_quantity"] else "-",
                " ".join(o["transitions"]),
            )
            for o in data["orders"]
        ]
        headers = (
            "CLIENT ID",
            "STEP/LEG",
            "SIDE",
            "QTY",
            "INSTRUMENT",
            "TYPE",
            "STATUS",
            "FILLED",
            "TRANSITIONS",
        )
        table(headers, order_rows, out, indent="  ")
    else:
        print("  none")
    calls = ", ".join(f"{k}={v}" for k, v in sorted(data["broker_calls"].items())) or "none"
    print(f"\nfills: {len(data['fills'])}  broker calls: {calls}")
    if data["errors"]:
        print("\nerrors:")
        for e in data["errors"]:
            kind = term.paint(e["kind"], "red")
            print(f"  {when(e['at'], zone)} {e['step'] or '-'} {kind}: {e['message']}")
    return 0

