"""``runner show RUN_ID``: one run's steps, orders (with status transitions and price history: placed,
modifies, chase steps, conversion to MARKET, fills), the run's P&L, errors and broker call counts. A
unique prefix of the run id is enough. ``--json`` for machines.

Nothing here asks the broker: an order that is not final shows the journal's state with its as-of time
(the intent's last write, in the playbook's zone, zone named), as the broker may have moved it since."""

from __future__ import annotations

import argparse
import sys
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


def collect(journal: Any, run_id: str) -> dict[str, Any]:
    """The run view (:mod:`runner.views.run_report`) as JSON (``--json``; the run page renders it)."""
    from runner.views.run_report import build

    return build(journal, run_id).to_json()


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
    if data["orders"]:
        print("\nprice history:")
        for o in data["orders"]:
            print(f"  {o['client_order_id']} {o['side']} {o['quantity']} {o['instrument']}")
            for line in o["history_text"]:
                print(f"    {line}")
    pnl = data["pnl"]
    print(
        f"\nP&L realised by the run: {pnl['realised'] or 'n/a'}"
        + (f"  ({pnl['note']})" if pnl["note"] else "")
    )
    for p in pnl["instruments"]:
        print(
            f"  {p['instrument']}: bought {p['bought']} sold {p['sold']} realised {p['realised'] or 'n/a'}"
            + (f" open {p['open_quantity']}" if p["open_quantity"] else "")
        )
    calls = ", ".join(f"{k}={v}" for k, v in sorted(data["broker_calls"].items())) or "none"
    print(f"\nfills: {len(data['fills'])}  broker calls: {calls}")
    if data["errors"]:
        print("\nerrors:")
        for e in data["errors"]:
            kind = term.paint(e["kind"], "red")
            print(f"  {when(e['at'], zone)} {e['step'] or '-'} {kind}: {e['message']}")
    return 0
