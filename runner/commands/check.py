"""``runner check [PLAYBOOK_DIR|PLAYBOOK ...]``: the go/no-go a desk runs before the open, on the trading
host. For every account used by the playbooks due on the date: credentials present here, a login (proved
by a read), the instrument master, every instrument resolved (inline lot/tick/freeze against the master),
calendar coverage, and the order-rate budget at each fire instant. Reads only: nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from runner.cli import EXIT_BROKER, EXIT_INVALID, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    import datetime as dt

    from runner.accounts import Account
    from runner.preflight.due import Due
    from runner.preflight.report import Row

DESCRIPTION = """\
The go/no-go before the open. Per account used by the playbooks due on --date (default: today in each
playbook's timezone; due = the daemon's schedule and calendar say it fires that day; a playbook without
schedule: is run by hand and counts as due):

  due          which playbooks fire that day
  calendar     the playbook's calendar covers the date (fails closed, as runner serve does)
  credentials  every credential the broker needs is configured, and its env var / file is present here
  login        logs in and reads the open orders (proves the session; Kotak only from the registered IP)
  master       the adapter's instrument master loads
  instruments  every fixed contract is listed; inline lot_size/tick_size/freeze_quantity agree with it;
               rolling instruments: the underlying is listed
  rolling      rolling instruments resolved now from the master and the underlying's last price, as
               a run would (an ATM far outside the listed strikes, no such expiry: FAIL)
  rate budget  orders the due steps may send at one instant (place = 1, a spread = 1 native or 1 per
               leg; cancels, modifies and square-offs not counted) against rate_limit: the last leaves
               (n - burst) / orders_per_second after the instant; over 1 s late is FAIL, any queue WARN

Nothing is sent that could trade.

exit codes: 0 ready (OK/WARN only), 1 invalid playbook or accounts file, 2 usage, 4 not ready
(a FAIL), 5 a broker could not be reached."""

EXAMPLES = """\
  runner check playbooks/ --accounts accounts.yaml
  runner check playbooks/ --date 2026-12-01 --json | jq '.rows[] | select(.status != "OK")'
"""

LATE_LIMIT = 1.0  # seconds: an order leaving later than this after its instant fails the budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("paths", nargs="*", metavar="PLAYBOOK_DIR|PLAYBOOK",
                        help="playbook files or directories (default: ./playbooks)")
    parser.add_argument("--accounts", metavar="FILE",
                        help="accounts file (default: $RUNNER_ACCOUNTS, ./accounts.yaml, "
                             "~/.config/runner/accounts.yaml)")
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="the trading day to check (default: today)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    from runner.alerts.setup import add_alerts_argument
    from runner.commands.arguments import add_db_argument

    add_alerts_argument(parser)  # each FAIL row is alerted (a pre-open check failed) when a file is set
    add_db_argument(parser)  # the alerts outbox: what could not be delivered is sent by the next process


def _date(text: str | None) -> dt.date | None:
    import datetime as dt

    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(EXIT_USAGE, f"--date {text!r}: expected YYYY-MM-DD") from None


def _load(paths: list[str], accounts_file: str | None) -> list[tuple[str, Any, dict[str, Any]]]:
    """The playbooks, validated as ``runner validate --accounts`` does, except against the local master
    file: the instruments row compares them with the master the adapter itself loads."""
    import dataclasses
    from pathlib import Path

    from runner.playbook.validate import account_names, expand_paths, playbook_from_report, validate_bytes

    names, accounts_report = account_names(accounts_file)
    names = dataclasses.replace(
        names, facts=tuple((n, dataclasses.replace(f, instruments=None)) for n, f in names.facts)
    )
    reports = [accounts_report] if accounts_report is not None else []
    reports += [validate_bytes(Path(p).read_bytes(), str(p), names, sniff=True) for p in expand_paths(paths)]
    bad = [d.format() for r in reports for d in r.errors]
    if bad:
        raise CommandError(EXIT_INVALID, [*bad, "fix these first (runner validate)"])
    return [(r.file, playbook_from_report(r), r.value) for r in reports if r.kind == "playbook"]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt
    import os
    from zoneinfo import ZoneInfo

    from runner.accounts import find_accounts_file, load_accounts
    from runner.daemon.calendar_gate import CalendarGate, default_calendar_loader
    from runner.playbook.checks.doc import Doc
    from runner.preflight.due import due_on
    from runner.preflight.report import CheckName, Row, Status

    paths = args.paths or ["playbooks"]
    missing = [p for p in paths if not os.path.exists(p)]
    if args.accounts and not os.path.isfile(args.accounts):
        missing.append(args.accounts)
    if missing:
        raise CommandError(EXIT_USAGE, [f"no such file or directory: {p}" for p in missing])
    day = _date(args.date)
    loaded = _load(paths, args.accounts)
    try:
        accounts = load_accounts(find_accounts_file(args.accounts))
    except ValueError as exc:
        raise CommandError(EXIT_INVALID, f"accounts file: {exc}") from None
    gate = CalendarGate(default_calendar_loader())
    by_day: dict[dt.date, list[tuple[str, Any]]] = {}
    for path, pb, _value in loaded:
        d = day or dt.datetime.now(ZoneInfo(pb.timezone)).date()
        by_day.setdefault(d, []).append((path, pb))
    rows: list[Row] = []
    due: list[Due] = []
    for d, pbs in by_day.items():
        got, not_due = due_on(pbs, d, gate)
        due.extend(got)
        for nd in not_due:
            if nd.fails_closed:
                rows.append(Row(nd.playbook.account, CheckName.CALENDAR, Status.FAIL,
                                f"{nd.path}: {nd.reason}",
                                "add the year's calendar or an override file ($RUNNER_CALENDARS)"))
    values = {path: value for path, _pb, value in loaded}
    per_account: dict[str, list[Due]] = {}
    for item in due:
        per_account.setdefault(item.playbook.account, []).append(item)
    for name, items in sorted(per_account.items()):
        account = accounts.get(name)
        if account is None:
            rows.append(Row(name, CheckName.DUE, Status.FAIL, "unknown account",
                            "add it to the accounts file or pass --accounts FILE"))
            continue
        listed = ", ".join(os.path.basename(i.path) for i in items)
        rows.append(Row(name, CheckName.DUE, Status.OK, f"{len(items)} playbook(s) due: {listed}"))
        rows.extend(_calendar_rows(name, items))
        docs = [Doc(values[i.path], None) for i in items]
        playbooks = [(os.path.basename(i.path), i.playbook,
                      day or dt.datetime.now(ZoneInfo(i.playbook.timezone)).date()) for i in items]
        rows.extend(asyncio.run(_account_rows(account, docs, playbooks)))
        rows.extend(_budget_rows(account, items, day))
    if not rows:
        rows.append(Row("-", CheckName.DUE, Status.OK, "nothing is due on the date"))
    _print(rows, args.json)
    _alert(rows, args)
    if any(r.unreachable for r in rows):
        return EXIT_BROKER
    return EXIT_REFUSED if any(r.status is Status.FAIL for r in rows) else EXIT_OK


def _alert(rows: list[Row], args: argparse.Namespace) -> None:
    """One pre-open alert per failing check, when an alerts file is configured."""
    from runner.alerts.config import find_alerts_file
    from runner.preflight.report import Status

    failed = [r for r in rows if r.status is Status.FAIL]
    if not failed or find_alerts_file(args.alerts) is None:
        return
    from runner.alerts.publish import publish_preopen_check_failed
    from runner.alerts.setup import alerts_for
    from runner.journal.store import Journal

    journal = Journal(args.db)
    try:
        with alerts_for(args.alerts, journal.engine):
            for r in failed:
                publish_preopen_check_failed(r.check.value, r.reason, account=r.account)
    finally:
        journal.close()


def _calendar_rows(name: str, items: list[Due]) -> list[Row]:
    from runner.preflight.report import CheckName, Row, Status

    outside = [f"{i.path}: {why}" for i in items for why in i.outside_session]
    calendars = sorted({i.playbook.calendar for i in items if i.playbook.calendar})
    if outside:
        return [Row(name, CheckName.CALENDAR, Status.WARN, f"{len(outside)} fire(s) outside the session",
                    "runner serve skips them: move the schedule inside the session", outside)]
    reason = f"{', '.join(calendars)} open" if calendars else "no calendar named (trades any day)"
    return [Row(name, CheckName.CALENDAR, Status.OK, reason)]


async def _account_rows(
    account: Account, docs: list[Any], due: list[tuple[str, Any, dt.date]] | None = None
) -> list[Row]:
    from runner.brokers.descriptions import describe
    from runner.preflight.probe import credentials_row, probe
    from runner.preflight.report import CheckName, Row, Status

    desc = describe(account.broker)
    if desc is None:
        return [Row(account.name, CheckName.LOGIN, Status.FAIL, f"unknown broker kind {account.broker!r}",
                    "fix the account's broker:")]
    if account.broker == "paper":
        return [Row(account.name, CheckName.LOGIN, Status.OK, "built-in paper broker: no session needed")]
    cred = credentials_row(account, desc)
    if cred.status is Status.FAIL:
        skipped = Row(account.name, CheckName.LOGIN, Status.FAIL, "not tried: credentials missing",
                      "fix the credentials first")
        return [cred, skipped]

    def factory(acct: Account) -> Any:
        from runner.brokers.registry import create_broker

        return create_broker(acct)

    return [cred, *await probe(account, desc, docs, factory, due or ())]


def _budget_rows(account: Account, items: list[Due], day: dt.date | None) -> list[Row]:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from runner.brokers.base import Capability
    from runner.brokers.descriptions import describe
    from runner.preflight.due import instants, order_bursts
    from runner.preflight.report import CheckName, Row, Status

    desc = describe(account.broker)
    native = desc is not None and desc.has(Capability.NATIVE_MULTILEG)
    bursts = []
    for item in items:
        d = day or dt.datetime.now(ZoneInfo(item.playbook.timezone)).date()
        bursts.extend(order_bursts(item, d, native))
    rl = account.rate_limit
    found = instants(bursts, rl.orders_per_second, rl.burst, rl.per_segment)
    tz = ZoneInfo(account.timezone)
    limit = f"{rl.orders_per_second:g}/s burst {rl.burst}" + (" per segment" if rl.per_segment else "")

    def say(i: Any) -> str:
        seg = f" on {i.segment}" if i.segment else ""
        return (f"{i.instant.astimezone(tz):%H:%M:%S %Z}{seg}: {i.orders} order(s), the last "
                f"+{i.delay:.2f} s ({', '.join(i.sources)})")

    details = [say(i) for i in found]
    over = [i for i in found if i.delay > LATE_LIMIT]
    queued = [i for i in found if 0 < i.delay <= LATE_LIMIT]
    if over:
        worst = max(over, key=lambda i: i.delay)
        return [Row(account.name, CheckName.RATE_BUDGET, Status.FAIL,
                    f"over budget at {len(over)} instant(s) at {limit}: {say(worst)}",
                    "stagger the steps' at: times or raise the account's rate_limit (within the "
                    "broker's and the exchange's limits)", details)]
    if queued:
        return [Row(account.name, CheckName.RATE_BUDGET, Status.WARN,
                    f"{len(queued)} instant(s) queue orders at {limit}, each within {LATE_LIMIT:g} s",
                    "", details)]
    most = max((i.orders for i in found), default=0)
    return [Row(account.name, CheckName.RATE_BUDGET, Status.OK,
                f"at most {most} order(s) at one instant ({len(found)} instant(s)) at {limit}", "", details)]


def _print(rows: list[Row], as_json: bool) -> None:
    from runner.preflight.report import Status

    ready = not any(r.status is Status.FAIL for r in rows)
    if as_json:
        import json

        print(json.dumps({"ready": ready, "rows": [r.to_json() for r in rows]}, indent=2))
        return
    from runner.commands.terminal import table

    colors = {Status.OK.value: "green", Status.WARN.value: "yellow", Status.FAIL.value: "red"}
    table(["ACCOUNT", "CHECK", "STATUS", "REASON", "ACTION"],
          [[r.account, r.check.value, r.status.value, r.reason, r.action] for r in rows],
          sys.stdout, colors=[None, None, colors.get])
    print("ready" if ready else "NOT READY", file=sys.stdout)
