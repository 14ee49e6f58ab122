"""``runner apply FILE``: execute a plan saved by ``runner plan --out FILE``, exactly.

Refuses (exit 4, nothing sent) when the playbook file changed since the plan (a diff is printed) or the
account's live state drifted: open orders or positions differ from those the plan was computed from, or
the run progressed meanwhile (the differences are printed). Otherwise the plan's run executes under the
plan's run id and client ids, journaled as any run; a broker write the plan does not contain is
rejected before it leaves. Exit codes as ``runner run``: 0 ok, 3 a step failed, 4 refused.
An interrupted apply is resumed with ``runner run PLAYBOOK --resume RUN_ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from runner.commands._shared import (
    PlaybookInvalid,
    add_db_argument,
    add_json_argument,
    configure_logging,
    deduplicating,
    exit_code,
    load_playbook,
    print_json,
    print_summary,
    progress_printer,
    report_dict,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("plan", metavar="FILE", help="plan file written by `runner plan --out`")
    parser.add_argument("--accounts", metavar="FILE", help="accounts file (default: the plan's)")
    parser.add_argument("--risk", metavar="FILE", help="global risk limits YAML (default $RUNNER_RISK)")
    parser.add_argument("--log-file", metavar="FILE", help="write JSON log lines here")
    add_db_argument(parser)
    add_json_argument(parser)


def _refuse(args: argparse.Namespace, lines: list[str]) -> int:
    from runner.cli import EXIT_REFUSED

    if args.json:
        print_json({"refused": True, "reasons": lines})
    for line in lines:
        print(line, file=sys.stderr)
    print("runner apply: refused; nothing was sent. Make a new plan.", file=sys.stderr)
    return EXIT_REFUSED


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_BROKER, EXIT_INVALID
    from runner.planning import PlanFileError, plan_from_dict

    try:
        plan = plan_from_dict(json.loads(Path(args.plan).read_text()))
    except OSError as exc:
        print(f"runner apply: {args.plan}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, PlanFileError) as exc:
        print(f"runner apply: {args.plan}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    from runner.applying import PlanDrifted, apply_plan, playbook_drift

    try:
        content = Path(plan.source.path).read_text()
    except OSError as exc:
        return _refuse(args, [f"playbook {plan.source.path}: cannot read: {exc.strerror}"])
    changed = playbook_drift(plan, content)
    if changed:
        return _refuse(args, changed)
    accounts = args.accounts or plan.accounts_file
    try:
        pb = load_playbook(plan.source.path, accounts)
    except PlaybookInvalid as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    tty = sys.stdout.isatty()
    configure_logging(args, progress=tty)
    from runner.accounts import get_account
    from runner.brokers import create_broker
    from runner.clock import SystemClock
    from runner.errors import BrokerError
    from runner.journal import Journal
    from runner.risk import load_risk_config

    db = args.db or plan.db
    tz = ZoneInfo(pb.timezone)
    clock = SystemClock()
    try:
        account = get_account(plan.account, accounts)
        broker = create_broker(account, clock=clock, db_url=db)
        risk = load_risk_config(args.risk)
    except (LookupError, ValueError, OSError) as exc:
        print(f"runner apply: {exc}", file=sys.stderr)
        return EXIT_BROKER
    journal = Journal(db)
    observer = deduplicating(progress_printer(tz)) if tty and not args.json else None

    async def main() -> Any:
        try:
            return await apply_plan(plan, pb, broker, journal, clock, risk=risk, observer=observer)
        finally:
            await broker.close()

    try:
        report = asyncio.run(main())
    except PlanDrifted as exc:
        return _refuse(args, exc.lines)
    except BrokerError as exc:
        print(f"runner apply: broker error: {exc}", file=sys.stderr)
        return EXIT_BROKER
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return exit_code(report)
