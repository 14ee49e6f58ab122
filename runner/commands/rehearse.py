"""``runner rehearse PLAYBOOK [--date D]``: run a whole day's playbook on the paper broker in virtual time
and print the timeline. Nothing touches a real broker. By default the paper book and journal live in
memory and vanish; ``--db URL`` keeps them (re-running on the same file resumes the rehearsal)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from zoneinfo import ZoneInfo

from runner.commands._shared import (
    PlaybookInvalid,
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
    parser.add_argument("playbook", metavar="PLAYBOOK")
    parser.add_argument("--date", type=dt.date.fromisoformat, help="trading date to rehearse (default today)")
    parser.add_argument(
        "--start",
        type=dt.time.fromisoformat,
        help="local time the virtual day starts (default 09:15 or the earliest `at:`)",
    )
    parser.add_argument("--db", metavar="URL", help="keep the paper book and journal in this database")
    parser.add_argument("--risk", metavar="FILE", help="global risk limits YAML (default $RUNNER_RISK)")
    parser.add_argument("--quiet", action="store_true", help="summary only, no timeline")
    parser.add_argument("--log-file", metavar="FILE", help="write JSON log lines here")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_INVALID

    try:
        pb = load_playbook(args.playbook, getattr(args, "accounts", None))
    except PlaybookInvalid as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    configure_logging(args, progress=True)
    from runner.rehearse import rehearse
    from runner.risk import load_risk_config

    tz = ZoneInfo(pb.timezone)
    date = args.date or dt.datetime.now(tz).date()
    observer = None if (args.quiet or args.json) else deduplicating(progress_printer(tz))
    if observer is not None:
        print(f"rehearsal of {pb.name} on {date} ({pb.timezone}), paper broker, virtual time")
    report = asyncio.run(
        rehearse(
            pb, date, db_url=args.db, start=args.start, observer=observer, risk=load_risk_config(args.risk)
        )
    )
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return exit_code(report)
