"""``runner run PLAYBOOK``: validate, then execute against the playbook's (or --account's) broker.

Kill switch: while ``runner halt`` is in force no order leaves (the step is REFUSED, exit 4); with
``--reduce-only`` only orders that shrink a position do.

Run identity: by default a run belongs to today's date in the playbook's timezone, so running the same
playbook again the same day RESUMES that run (finished steps are not repeated, orders in flight are
looked up, never re-sent). Steps wait for their ``at:`` times; a step reached after its ``at`` follows
its ``late:`` policy (default skip).

``--now`` fires a fresh, separate run at once: its slot is the current second, ``at:`` times are not
waited for (steps run back to back; ``after:`` delays still apply). Resume an interrupted ``--now`` run
with ``--resume RUN_ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from zoneinfo import ZoneInfo

from runner.commands._shared import (
    PlaybookInvalid,
    add_db_argument,
    add_json_argument,
    configure_logging,
    deduplicating,
    exit_code,
    kill_switch,
    load_playbook,
    print_json,
    print_summary,
    progress_printer,
    report_dict,
)

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("playbook", metavar="PLAYBOOK", help="playbook YAML file")
    parser.add_argument("--account", help="account name (default: the playbook's `account:`)")
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )
    parser.add_argument(
        "--now",
        action="store_true",
        help="fire a fresh run immediately: slot = now, `at:` times not waited for",
    )
    parser.add_argument("--resume", metavar="RUN_ID", help="resume this run (e.g. an interrupted --now run)")
    parser.add_argument("--risk", metavar="FILE", help="global risk limits YAML (default $RUNNER_RISK)")
    parser.add_argument("--log-file", metavar="FILE", help="write JSON log lines here")
    add_db_argument(parser)
    add_json_argument(parser)


def scheduled_slot(args: argparse.Namespace, tz: ZoneInfo, now: dt.datetime) -> dt.datetime:
    if args.now:
        return now.replace(microsecond=0)
    local_today = now.astimezone(tz).date()
    return dt.datetime.combine(local_today, dt.time(0), tzinfo=tz)


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_BROKER, EXIT_INVALID, EXIT_USAGE

    try:
        pb = load_playbook(args.playbook, getattr(args, "accounts", None))
    except PlaybookInvalid as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    tty = sys.stdout.isatty()
    configure_logging(args, progress=tty)
    from runner.accounts import get_account
    from runner.brokers import create_broker
    from runner.clock import SystemClock
    from runner.engine import RunOptions, execute
    from runner.journal import Journal
    from runner.risk import load_risk_config

    tz = ZoneInfo(pb.timezone)
    clock = SystemClock()
    journal = Journal(args.db)
    if args.resume:
        found = journal.get_run(args.resume)
        if found is None:
            print(f"runner run: no run {args.resume!r} in the journal", file=sys.stderr)
            return EXIT_USAGE
        if found.playbook != pb.name:
            print(f"runner run: run {args.resume} belongs to playbook {found.playbook!r}", file=sys.stderr)
            return EXIT_USAGE
        slot, ignore_at = found.scheduled_for, found.mode == "now"
    else:
        slot, ignore_at = scheduled_slot(args, tz, clock.now()), bool(args.now)
    try:
        account = get_account(args.account or pb.account, args.accounts)
        broker = create_broker(account, clock=clock, db_url=args.db)
        risk = load_risk_config(args.risk)
    except (LookupError, ValueError, OSError) as exc:
        print(f"runner run: {exc}", file=sys.stderr)
        return EXIT_BROKER
    observer = deduplicating(progress_printer(tz)) if tty and not args.json else None
    options = RunOptions(
        scheduled_for=slot, mode="now" if ignore_at else "run", ignore_at=ignore_at, risk=risk
    )

    async def main() -> object:
        try:
            async with kill_switch(broker, journal.engine) as guarded:
                return await execute(
                    pb, guarded, journal, clock, account=account.name, options=options, observer=observer
                )
        finally:
            await broker.close()

    try:
        report = asyncio.run(main())
    except Exception as exc:  # connect failures etc.: the journal keeps the run for a resume
        from runner.errors import BrokerError

        if isinstance(exc, BrokerError):
            print(f"runner run: broker error: {exc}", file=sys.stderr)
            return EXIT_BROKER
        raise
    from runner.engine import RunReport

    assert isinstance(report, RunReport)
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return exit_code(report)
