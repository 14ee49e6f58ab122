"""``runner plan PLAYBOOK``: the exact broker calls a run would make, changing nothing.

Reads the account's open orders and positions (and this run's journal, when the run is under way) and
prints, step by step, every call a run would send now: places with their client ids, cancels of the
orders a filter matches, square-off slices, and the calls that depend on what happens at runtime
(fills, timeouts, chase prices) marked with their condition. Pre-trade limits are checked; refusals
are shown. Then positions and open orders before -> after, assuming every planned market/limit order
fills (stop orders stay resting).

``--out FILE`` saves the plan (JSON); ``runner apply FILE`` executes exactly it, refusing if the state
or the playbook changed. The run identity is that of ``runner run`` (today's run; ``--now``: a fresh
run that does not wait for ``at:`` times).

While the kill switch is set (``runner halt``) a warning goes to stderr and ``--json`` shows it under
``kill_switch``.

Exit codes: 0 planned, 3 some step would fail, 4 some step would be refused by limits, 1 invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runner.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from runner.commands.arguments import (
    add_db_argument,
    add_json_argument,
    add_log_file_argument,
    add_playbook_arguments,
    add_risk_argument,
    configure_logging,
)
from runner.commands.inputs import load_account, load_playbook, load_risk
from runner.commands.results import print_json
from runner.commands.session import make_broker
from runner.commands.terminal import table as _table
from runner.plan.groups import nest

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from runner.plan.model import Plan, PlannedCall

EXAMPLES = """\
  runner plan playbooks/iron_condor.yaml                  # what today's run would send now
  runner plan playbooks/iron_condor.yaml --now --out p.json && runner apply p.json
  runner plan playbooks/iron_condor.yaml --json | jq '.steps[].calls[].client_order_id'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_playbook_arguments(parser)
    parser.add_argument("--now", action="store_true", help="plan a fresh run that ignores `at:` times")
    add_risk_argument(parser)
    parser.add_argument("--out", metavar="FILE", help="save the plan here for `runner apply`")
    add_log_file_argument(parser)
    add_db_argument(parser)
    add_json_argument(parser)


def _safe_db(url: str | None) -> str | None:
    """Record the journal URL in the plan only when it holds no password."""
    if url is None:
        return None
    from sqlalchemy.engine import make_url

    return url if make_url(url).password is None else None


def run(args: argparse.Namespace) -> int:
    import asyncio
    from zoneinfo import ZoneInfo

    pb = load_playbook(args.playbook, args.accounts)
    account = load_account(args.account or pb.account, args.accounts, explicit=bool(args.account))
    risk = load_risk(args.risk)
    configure_logging(args, progress=True)
    from runner.clock import SystemClock
    from runner.commands.run import scheduled_slot
    from runner.engine.killswitch import ControlStore
    from runner.journal.store import Journal
    from runner.plan.model import PlaybookSource
    from runner.plan.planner import make_plan

    path = Path(args.playbook)
    source = PlaybookSource(str(path.resolve()), path.read_text())
    tz = ZoneInfo(pb.timezone)
    clock = SystemClock()
    broker = make_broker(account, clock=clock, db_url=args.db)
    journal = Journal(args.db)
    now = clock.now()

    async def main() -> Plan:
        try:
            return await make_plan(
                pb,
                source,
                broker,
                journal,
                account=account.name,
                now=now,
                scheduled_for=scheduled_slot(args, tz, now),
                ignore_at=bool(args.now),
                risk=risk,
                accounts_file=str(Path(args.accounts).resolve()) if args.accounts else None,
                db=_safe_db(args.db),
            )
        finally:
            await broker.close()

    plan = asyncio.run(main())  # broker errors exit 5 via runner.cli
    switch = ControlStore(journal.engine).get()
    if switch.halted:  # the plan shows what would be sent; apply would have its orders refused now
        why = f" ({switch.reason})" if switch.reason else ""
        print(
            f"warning: kill switch is {switch.mode.value.upper()}{why} since {switch.since} by {switch.by}: "
            "`runner apply` would have this plan's orders refused until `runner resume`",
            file=sys.stderr,
        )
    doc = plan.to_dict()
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if args.json:
        print_json({**doc, "kill_switch": switch.as_dict()})  # not saved: a plan file is state-free
        if args.out:
            print(f"saved to {args.out}", file=sys.stderr)
    else:
        print_plan(plan, tz)
        if args.out:
            print(f"\nsaved to {args.out}; execute it with: runner apply {args.out}")
    if plan.refused:
        return EXIT_REFUSED
    return EXIT_FAILED if plan.fails else EXIT_OK


# --- text rendering ---------------------------------------------------------------------------------


VERDICT_COLOR = {"planned": "green", "fails": "red", "refused": "red", "skipped": "yellow"}


def table(
    headers: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    out: TextIO,
    indent: str = "",
    colors: Sequence[Callable[[str], str | None] | None] = (),
) -> None:
    _table(headers, rows, out, indent=indent, colors=colors)


def price_text(c: PlannedCall) -> str:
    if c.price_note:  # LTP-relative: as written, with the estimate now
        return c.price_note
    parts = []
    if c.price is not None:
        parts.append(("~" if c.runtime_price else "") + format(c.price, "f"))
    if c.trigger_price is not None:
        parts.append(f"trg {c.trigger_price}")
    if c.runtime_price:
        parts.append("(at runtime)")
    return " ".join(parts) or "-"


def risk_text(c: PlannedCall) -> str:
    if c.refused:
        return "REFUSED"
    return c.risk.split(":")[0] if c.risk else ""


def print_plan(plan: Plan, tz: ZoneInfo, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    slot = plan.scheduled_for.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    timing = "`at:` times not waited for" if plan.ignore_at else "`at:` times honoured"
    print(f"plan: {plan.playbook} on {plan.account} ({plan.broker} broker)", file=out)
    print(f"run:  {plan.run_id} (slot {slot}; {timing})", file=out)
    print(
        f"state: {len(plan.state.open_orders)} open order(s), {len(plan.state.positions)} position(s); "
        f"fingerprint {plan.state.fingerprint[:12]}; nothing was sent\n",
        file=out,
    )
    table(
        ("STEP", "KIND", "VERDICT", "TIMING", "DETAIL"),
        nest(
            [(s.step_id, s.kind, s.verdict.value, s.timing, s.message) for s in plan.steps],
            [s.group for s in plan.steps],
            timing_col=3,
        ),
        out,
        colors=(None, None, VERDICT_COLOR.get),
    )
    rows = [
        (
            s.step_id,
            c.op.value,
            c.client_order_id,
            c.side.value,
            str(c.quantity),
            c.instrument,
            c.order_type.value,
            price_text(c),
            risk_text(c),
            c.condition or "now",
        )
        for s in plan.steps
        for c in s.calls
    ]
    print("\nbroker calls (WHEN `now`: sent as soon as the step runs, given the state read):", file=out)
    if rows:
        headers = ("STEP", "OP", "CLIENT ID", "SIDE", "QTY", "INSTRUMENT", "TYPE", "PRICE", "RISK", "WHEN")
        table(headers, rows, out, "  ")
    else:
        print("  none", file=out)
    print("\npositions before -> after (if every planned market/limit order fills):", file=out)
    prow = [
        (
            p["instrument"],
            p["product"],
            str(p["before"]),
            "->",
            str(p["after"]),
            "" if p["before"] != p["after"] else "(unchanged)",
        )
        for p in plan.positions
    ]
    if prow:
        table(("INSTRUMENT", "PRODUCT", "BEFORE", "", "AFTER", ""), prow, out, "  ")
    else:
        print("  flat before and after", file=out)
    print("\nopen orders before -> after:", file=out)
    orow = [
        (
            o["client_order_id"] or f"#{o['broker_order_id']}",
            o["side"],
            str(o["quantity"]),
            o["instrument"],
            o["order_type"],
            o["price"] or (f"trg {o['trigger_price']}" if o["trigger_price"] else "-"),
            o["before"] or "-",
            "->",
            o["after"],
        )
        for o in plan.orders
    ]
    if orow:
        table(("ORDER", "SIDE", "QTY", "INSTRUMENT", "TYPE", "PRICE", "BEFORE", "", "AFTER"), orow, out, "  ")
    else:
        print("  none before, none after", file=out)
