"""``runner rehearse PLAYBOOK [--date D]``: run a whole day's playbook on the paper broker in virtual time
and print the timeline. Nothing touches a real broker. By default the paper book and journal live in
memory and vanish; ``--db URL`` keeps them (re-running on the same file resumes the rehearsal)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from runner.commands.arguments import (
    add_json_argument,
    add_log_file_argument,
    add_risk_argument,
    configure_logging,
)
from runner.commands.inputs import load_playbook, load_risk
from runner.commands.results import exit_code, print_json, print_summary, report_dict
from runner.commands.terminal import deduplicating, progress_printer

EXAMPLES = """\
  runner rehearse playbooks/opening_straddle_chase.yaml --date 2026-12-01
  runner rehearse playbooks/iron_condor.yaml --quiet --json | jq .status
"""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _time(text: str) -> dt.time:
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (expected HH:MM[:SS])") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("playbook", metavar="PLAYBOOK", help="playbook YAML file")
    parser.add_argument(
        "--date", type=_date, metavar="YYYY-MM-DD", help="trading date to rehearse (default today)"
    )
    parser.add_argument(
        "--start",
        type=_time,
        metavar="HH:MM",
        help="local time the virtual day starts (default 09:15 or the earliest `at:`)",
    )
    parser.add_argument("--db", metavar="URL", help="keep the paper book and journal in this database")
    add_risk_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="summary only, no timeline")
    add_log_file_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from zoneinfo import ZoneInfo

    pb = load_playbook(args.playbook)
    risk = load_risk(args.risk)
    configure_logging(args, progress=True)
    from runner.plan.rehearse import rehearse

    tz = ZoneInfo(pb.timezone)
    date = args.date or dt.datetime.now(tz).date()
    # The timeline is progress, on stderr: stdout stays the result. With --json only for a person watching.
    show = not args.quiet and (not args.json or sys.stderr.isatty())
    observer = deduplicating(progress_printer(tz)) if show else None
    if observer is not None:
        print(
            f"rehearsal of {pb.name} on {date} ({pb.timezone}), paper broker, virtual time", file=sys.stderr
        )
    report = asyncio.run(rehearse(pb, date, db_url=args.db, start=args.start, observer=observer, risk=risk))
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return exit_code(report)
