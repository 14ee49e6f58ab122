"""``runner run PLAYBOOK``: validate, then execute against the playbook's (or --account's) broker.

Kill switch: while ``runner halt`` is in force no order leaves (the step is REFUSED, exit 4); with
``--reduce-only`` only orders that shrink a position do.

Run identity: by default a run belongs to today's date in the playbook's timezone, so running the same
playbook again the same day RESUMES that run (finished steps are not repeated, orders in flight are
looked up, never re-sent). Steps wait for their ``at:`` times (saying which step waits until when, a
countdown on a terminal); a step reached after its ``at`` follows its ``late:`` policy (default skip).

``--now`` fires a fresh, separate run at once and runs EVERY step at once, in playbook order: its slot
is the current second and no ``at:`` is waited for, ``at:``-timed exit steps included (a 15:20
``cancel`` or a 15:15 ``square_off`` runs straight after the entries and undoes them); ``after:``
delays still apply. For a full day's runbook in order and on time use ``runner rehearse`` (virtual
time) or a plain ``runner run``. Resume an interrupted ``--now`` run with ``--resume RUN_ID``.

Stopping: SIGTERM or SIGINT (Ctrl-C) starts no new step (exit steps included: a process being stopped
does not start trading), lets in-flight broker calls finish (a step already trading gets 10 s), closes
the run as ``interrupted`` and exits 143 (SIGTERM) or 130 (SIGINT); ``runner show RUN`` says how to
resume it. A run whose process was killed outright is closed as interrupted by the account's next
``run``, ``apply`` or ``serve``, and its orders are then looked up. Two processes never execute one run:
the second is refused (exit 4, naming the holder).

Calendar: on an account with ``enforce_calendar`` (the default; the built-in paper account has it off) a
playbook naming a ``calendar:`` is refused (exit 4, nothing sent) on a closed day, a day the calendar's
data does not cover, or outside the day's session (pre-open included). ``--ignore-calendar`` overrides,
with a warning on stderr and in the log.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from typing import TYPE_CHECKING

from runner.alerts.setup import add_alerts_argument, alerts_for
from runner.cli import EXIT_USAGE, CommandError
from runner.commands.arguments import (
    add_busy_wait_argument,
    add_calendar_argument,
    add_db_argument,
    add_json_argument,
    add_log_file_argument,
    add_playbook_arguments,
    add_risk_argument,
    configure_logging,
)
from runner.commands.inputs import check_calendar, load_account, load_playbook, load_risk
from runner.commands.results import print_json, print_summary, report_dict
from runner.commands.session import kill_switch, make_broker, run_exit_code, run_process
from runner.commands.terminal import deduplicating, progress_printer, with_wait_notice

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from runner.engine.core import RunReport
    from runner.engine.interrupt import Interrupt

DESCRIPTION = __doc__
EXAMPLES = """\
  runner run playbooks/opening_straddle_chase.yaml         # today's run; resumes if already started
  runner run playbooks/cancel_all_open.yaml --now --json   # a fresh run at once, result as JSON
  runner run playbooks/cancel_all_open.yaml --resume 20261201-093000+0530-ab12cd34
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_playbook_arguments(parser)
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--now",
        action="store_true",
        help="fire a fresh run immediately and run EVERY step at once, in order: no `at:` is waited for, "
        "`at:`-timed exit steps (a 15:20 cancel, a square-off) included; `after:` still applies",
    )
    when.add_argument("--resume", metavar="RUN_ID", help="resume this run (e.g. an interrupted --now run)")
    add_risk_argument(parser)
    add_busy_wait_argument(parser)
    add_log_file_argument(parser)
    add_calendar_argument(parser)
    add_db_argument(parser)
    add_json_argument(parser)
    add_alerts_argument(parser)


def scheduled_slot(args: argparse.Namespace, tz: ZoneInfo, now: dt.datetime) -> dt.datetime:
    if args.now:
        return now.replace(microsecond=0)
    local_today = now.astimezone(tz).date()
    return dt.datetime.combine(local_today, dt.time(0), tzinfo=tz)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from zoneinfo import ZoneInfo

    pb = load_playbook(args.playbook, args.accounts)
    account = load_account(args.account or pb.account, args.accounts, explicit=bool(args.account))
    risk = load_risk(args.risk)
    tty = sys.stderr.isatty()
    configure_logging(args, progress=tty)
    from runner.clock import SystemClock
    from runner.engine.core import RunOptions, execute
    from runner.journal.store import Journal

    tz = ZoneInfo(pb.timezone)
    clock = SystemClock()
    check_calendar(
        pb.calendar,
        account,
        clock.now(),
        ignore=args.ignore_calendar,
        command="run",
        waits_for_session=not args.now,  # --now sends at once: no early start before the session
    )
    journal = Journal(args.db)
    if args.resume:
        found = journal.get_run(args.resume)
        if found is None:
            raise CommandError(EXIT_USAGE, f"no run {args.resume!r} in the journal (see `runner history`)")
        if found.playbook != pb.name:
            raise CommandError(EXIT_USAGE, f"run {args.resume} belongs to playbook {found.playbook!r}")
        slot, ignore_at = found.scheduled_for, found.mode == "now"
    else:
        slot, ignore_at = scheduled_slot(args, tz, clock.now()), bool(args.now)
    broker = make_broker(account, clock=clock, db_url=args.db)
    observer = with_wait_notice(deduplicating(progress_printer(tz)) if tty else None, tz)
    options = RunOptions(
        scheduled_for=slot,
        mode="now" if ignore_at else "run",
        ignore_at=ignore_at,
        risk=risk,
        busy_wait=args.busy_wait,  # None: the playbook's account_busy.wait, else the default
        run_id=args.resume,  # a resumed run keeps its journaled id, whatever scheme made it
    )

    async def main() -> tuple[RunReport, Interrupt]:
        try:
            async with (
                run_process(journal, "run") as interrupt,
                kill_switch(broker, journal.engine) as guarded,
            ):
                opts = dataclasses.replace(options, interrupt=interrupt)
                report = await execute(
                    pb, guarded, journal, clock, account=account.name, options=opts, observer=observer
                )
                return report, interrupt
        finally:
            await broker.close()

    # Broker errors escaping the run (cannot connect, ...) exit 5 via runner.cli; the run is closed
    # FAILED with the reason (a resume may still finish it).
    with alerts_for(args.alerts, journal.engine):  # flushed within the file's flush_seconds at exit
        report, interrupt = asyncio.run(main())
    if args.json:
        print_json(report_dict(report))
    else:
        print_summary(report, tz)
    return run_exit_code(report, interrupt)
