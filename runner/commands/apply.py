"""``runner apply FILE``: execute a plan saved by ``runner plan --out FILE``, exactly.

Refuses (exit 4, nothing sent) when the playbook file changed since the plan (a diff is printed) or the
account's live state drifted: open orders or positions differ from those the plan was computed from, or
the run progressed meanwhile (the differences are printed). Otherwise the plan's run executes under the
plan's run id and client ids, journaled as any run; a broker write the plan does not contain is
rejected before it leaves. The kill switch (``runner halt``) applies as to ``runner run``: an order it
refuses makes its step REFUSED. So does the account's calendar: refused outside the playbook calendar's
trading day and session (``--ignore-calendar`` overrides). Exit codes as ``runner run``: 0 ok, 3 a step
failed, 4 refused; SIGTERM / SIGINT as ``runner run``: 143 / 130, the run closed as interrupted.
An interrupted apply is resumed with ``runner run PLAYBOOK --resume RUN_ID``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runner.alerts.setup import add_alerts_argument, alerts_for
from runner.cli import EXIT_INVALID, EXIT_REFUSED, EXIT_USAGE, CommandError
from runner.commands.arguments import (
    add_busy_wait_argument,
    add_calendar_argument,
    add_db_argument,
    add_json_argument,
    add_log_file_argument,
    add_risk_argument,
    configure_logging,
)
from runner.commands.inputs import check_calendar, load_account, load_playbook, load_risk
from runner.commands.results import print_json, print_summary, report_dict
from runner.commands.session import kill_switch, make_broker, run_exit_code, run_process
from runner.commands.terminal import deduplicating, progress_printer, with_wait_notice

if TYPE_CHECKING:
    from runner.engine.core import RunReport
    from runner.engine.interrupt import Interrupt

EXAMPLES = """\
  runner plan playbooks/iron_condor.yaml --now --out plan.json   # review it, then:
  runner apply plan.json                                         # exit 4 if anything drifted
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("plan", metavar="FILE", help="plan file written by `runner plan --out`")
    parser.add_argument("--accounts", metavar="FILE", help="accounts file (default: the plan's)")
    add_risk_argument(parser)
    add_busy_wait_argument(parser)
    add_log_file_argument(parser)
    add_calendar_argument(parser)
    add_db_argument(parser)
    add_json_argument(parser)
    add_alerts_argument(parser)


def _refuse(args: argparse.Namespace, lines: list[str]) -> int:
    if args.json:
        print_json({"refused": True, "reasons": lines})
    for line in lines:
        print(line, file=sys.stderr)
    print("runner apply: refused; nothing was sent. Make a new plan.", file=sys.stderr)
    return EXIT_REFUSED


def run(args: argparse.Namespace) -> int:
    import asyncio
    from zoneinfo import ZoneInfo

    from runner.plan.model import PlanFileError, plan_from_dict

    try:
        plan = plan_from_dict(json.loads(Path(args.plan).read_text()))
    except FileNotFoundError:
        raise CommandError(EXIT_USAGE, f"{args.plan}: no such plan file") from None
    except OSError as exc:
        raise CommandError(EXIT_INVALID, f"{args.plan}: cannot read: {exc.strerror}") from None
    except (ValueError, PlanFileError) as exc:
        raise CommandError(EXIT_INVALID, f"{args.plan}: {exc}") from None
    from runner.plan.apply import PlanDrifted, apply_plan, playbook_drift

    try:
        content = Path(plan.source.path).read_text()
    except OSError as exc:
        return _refuse(args, [f"playbook {plan.source.path}: cannot read: {exc.strerror}"])
    except UnicodeDecodeError:  # planned as UTF-8 (validated), so it changed since
        return _refuse(args, [f"playbook {plan.source.path}: no longer UTF-8 text: changed since the plan"])
    changed = playbook_drift(plan, content)
    if changed:
        return _refuse(args, changed)
    accounts = args.accounts or plan.accounts_file
    pb = load_playbook(plan.source.path, accounts)
    account = load_account(plan.account, accounts, explicit=False)
    risk = load_risk(args.risk)
    tty = sys.stderr.isatty()
    configure_logging(args, progress=tty)
    from runner.clock import SystemClock
    from runner.journal.store import Journal

    db = args.db or plan.db
    tz = ZoneInfo(pb.timezone)
    clock = SystemClock()
    check_calendar(pb.calendar, account, clock.now(), ignore=args.ignore_calendar, command="apply")
    broker = make_broker(account, clock=clock, db_url=db)
    journal = Journal(db)
    observer = with_wait_notice(deduplicating(progress_printer(tz)) if tty else None, tz)

    async def main() -> tuple[RunReport, Interrupt]:
        try:
            async with (
                run_process(journal, "apply") as interrupt,
                kill_switch(broker, journal.engine) as guarded,
            ):
                report = await apply_plan(
                    plan,
                    pb,
                    guarded,
                    journal,
                    clock,
                    risk=risk,
                    observer=observer,
                    interrupt=interrupt,
                    busy_wait=args.busy_wait,
                )
                return report, interrupt
        finally:
            await broker.close()

    try:
        with alerts_for(args.alerts, journal.engine):  # flushed within the file's flush_seconds at exit
            report, interrupt = asyncio.run(main())  # broker errors exit 5 via runner.cli
    except PlanDrifted as exc:
        return _refuse(args, exc.lines)
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return run_exit_code(report, interrupt)
