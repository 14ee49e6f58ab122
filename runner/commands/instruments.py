"""``runner instruments``: the brokers' own instrument masters.

``runner instruments sync [ACCOUNT ...]`` downloads each account's master (default: every account in
the accounts file whose broker publishes one, plus paper), stores a content-hashed snapshot per trading
day under the journal's directory and compares it with the last good one. An anomalous download (parse
failure, header-only file, row count collapse, every expiry past, a missing or renamed file, lot/tick/
freeze changed on an instrument the --playbooks use) is QUARANTINED: kept for inspection, reported on
stderr, and the last good snapshot stays in force. Exit 0 when every account synced good, 4 when any
download was quarantined, 5 when a master could not be downloaded (broker or environment).

``runner instruments search TERM ...`` finds instruments in an account's master: every term must match
the symbol, strike, option type (CE/PE), expiry (YYYY-MM-DD), exchange, token or trading symbol
(case-insensitive; a term that is no exact value matches inside symbols and trading symbols).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

from runner.cli import EXIT_BROKER, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError
from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json
from runner.commands.terminal import table

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.instruments.index import Snapshot
    from runner.instruments.sync import SyncResult

EXAMPLES = """\
  runner instruments sync                                # every account with a master, plus paper
  runner instruments sync kotak-main --playbooks playbooks/ --json
  runner instruments search NIFTY 24500 CE --account kotak-main --expiry 2026-12-29
  runner instruments search reliance --account kotak-main --json
"""

STATUS_COLOR = {"good": "green", "quarantined": "red", "error": "red"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="sync (download and check) or search"
    )
    sync = sub.add_parser(
        "sync",
        help="download, check and snapshot masters (exit 0 good, 4 quarantined, 5 download failed)",
        description="Download each account's instrument master, snapshot it (sha256, one per trading day) "
        "and check it against the last good one; an anomalous download is quarantined and the last good "
        "snapshot stays in force. Exit codes: 0 every account good, 4 any download quarantined, "
        "5 a master could not be downloaded (broker or environment).",
    )
    sync.add_argument(
        "accounts",
        nargs="*",
        metavar="ACCOUNT",
        help="accounts to sync (default: every account whose broker publishes a master, plus paper)",
    )
    sync.add_argument("--accounts", dest="accounts_file", metavar="FILE", help="accounts file")
    sync.add_argument(
        "--playbooks",
        action="append",
        default=[],
        metavar="DIR",
        help="playbook file or directory (repeatable): lot/tick/freeze changes on the "
        "instruments they name quarantine the download",
    )
    add_db_argument(sync)
    add_json_argument(sync)
    from runner.alerts.setup import add_alerts_argument

    add_alerts_argument(sync)  # a quarantined master is alerted (meant for a cron job before the open)
    search = sub.add_parser(
        "search",
        help="find instruments in an account's master",
        description="Every TERM must match the symbol, strike, option type, expiry "
        "(YYYY-MM-DD), exchange, token or trading symbol, case-insensitively.",
    )
    search.add_argument("terms", nargs="+", metavar="TERM", help="e.g. NIFTY 24500 CE")
    search.add_argument("--account", default="paper", help="whose master (default: paper)")
    search.add_argument("--accounts", dest="accounts_file", metavar="FILE", help="accounts file")
    search.add_argument("--expiry", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="only this expiry")
    search.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (default 50)")
    add_db_argument(search)
    add_json_argument(search)


def run(args: argparse.Namespace) -> int:
    if args.action == "sync":
        return _sync(args)
    return _search(args)


# --- sync ------------------------------------------------------------------------------------------------


def _accounts(args: argparse.Namespace) -> list[Account]:
    from runner.accounts import find_accounts_file, load_accounts
    from runner.commands.inputs import check_accounts_file
    from runner.instruments.generic import format_for

    check_accounts_file(args.accounts_file)
    known = load_accounts(find_accounts_file(args.accounts_file))
    if args.accounts:
        unknown = [a for a in args.accounts if a not in known]
        if unknown:
            raise CommandError(
                EXIT_USAGE, f"unknown account {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        chosen = [known[a] for a in args.accounts]
        none = [a.name for a in chosen if format_for(a) is None]
        if none:
            raise CommandError(
                EXIT_USAGE, f"account {none[0]!r}: its broker publishes no master runner reads"
            )
        return chosen
    return [a for a in known.values() if format_for(a) is not None]


def _age(snap: Snapshot, now: dt.datetime) -> str:
    seconds = int((now - snap.created_at).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _snap_dict(snap: Snapshot | None, now: dt.datetime) -> dict[str, Any] | None:
    if snap is None:
        return None
    return {
        "sha256": snap.sha256,
        "trading_day": snap.trading_day.isoformat(),
        "rows": snap.row_count,
        "status": snap.status.value,
        "created_at": snap.created_at.isoformat(),
        "age_seconds": int((now - snap.created_at).total_seconds()),
        "path": snap.path,
    }


def _sync(args: argparse.Namespace) -> int:
    import asyncio

    from runner.instruments.snapshots import state_dir
    from runner.instruments.sync import SyncError, sync_account
    from runner.instruments.used import instruments_in
    from runner.journal.db import shared_engine

    accounts = _accounts(args)
    used = []
    if args.playbooks:
        from runner.playbook.validate import PlaybookInvalid

        try:
            used = instruments_in(args.playbooks, args.accounts_file)
        except FileNotFoundError as exc:
            raise CommandError(EXIT_USAGE, f"{exc.filename}: no such file") from None
        except PlaybookInvalid as exc:
            from runner.cli import EXIT_INVALID

            raise CommandError(EXIT_INVALID, [d.format() for d in exc.report.errors]) from None
    engine = shared_engine(args.db)
    state = state_dir(args.db)
    now = dt.datetime.now(dt.UTC)
    results: list[tuple[Account, SyncResult | None, str | None]] = []

    async def go() -> None:
        for account in accounts:
            try:
                results.append(
                    (account, await sync_account(account, engine, state=state, used=used, now=now), None)
                )
            except SyncError as exc:
                results.append((account, None, str(exc)))

    from runner.alerts.setup import alerts_for

    with alerts_for(args.alerts, engine):  # quarantines publish an alert; flushed before exit
        asyncio.run(go())
    for account, res, err in results:
        if err is not None:
            print(f"runner instruments sync: {err}", file=sys.stderr)
        elif res is not None and res.quarantined:
            kept = (
                f"snapshot {res.in_force.sha256[:12]} of {res.in_force.trading_day} stays in force"
                if res.in_force
                else "there is no good snapshot to fall back on"
            )
            print(
                f"runner instruments sync: account {account.name}: master QUARANTINED "
                f"({'; '.join(a.message for a in res.anomalies)}); {kept}",
                file=sys.stderr,
            )
    if args.json:
        print_json(
            [
                {
                    "account": account.name,
                    "broker": account.broker,
                    "status": "error" if res is None else res.snapshot.status.value,
                    "error": err,
                    "created": None if res is None else res.created,
                    "snapshot": None if res is None else _snap_dict(res.snapshot, now),
                    "reasons": [] if res is None else [a.as_dict() for a in res.anomalies],
                    "in_force": None if res is None else _snap_dict(res.in_force, now),
                }
                for account, res, err in results
            ]
        )
    elif not results:
        print("no account has an instrument master to sync")
    else:
        rows = []
        for account, res, err in results:
            if res is None:
                rows.append((account.name, account.broker, "-", "-", "-", "error", "-", err or ""))
                continue
            s = res.snapshot
            rows.append(
                (
                    account.name,
                    account.broker,
                    s.trading_day.isoformat(),
                    str(s.row_count),
                    s.sha256[:12],
                    s.status.value,
                    _age(s, now),
                    "; ".join(a.message for a in res.anomalies) or "-",
                )
            )
        headers = ("ACCOUNT", "BROKER", "DAY", "ROWS", "SHA256", "STATUS", "AGE", "REASONS")
        table(headers, rows, sys.stdout, colors=(None,) * 5 + (STATUS_COLOR.get,))
    if any(err is not None for _, _, err in results):
        return EXIT_BROKER
    if any(res is not None and res.quarantined for _, res, _ in results):
        return EXIT_REFUSED
    return EXIT_OK


# --- search ----------------------------------------------------------------------------------------------


def _search(args: argparse.Namespace) -> int:
    from runner.commands.inputs import load_account
    from runner.instruments.load import master_for
    from runner.instruments.search import SearchIndex

    account = load_account(args.account, args.accounts_file, explicit=True)
    try:
        master = master_for(account, db_url=args.db)
    except (LookupError, OSError) as exc:
        raise CommandError(EXIT_BROKER, f"account {account.name!r}: {exc}") from None
    found = SearchIndex(master).search(args.terms, expiry=args.expiry, limit=args.limit)
    if args.json:
        print_json(
            [
                {
                    "instrument": r.instrument.key,
                    "exchange": r.instrument.exchange,
                    "symbol": r.instrument.symbol,
                    "expiry": r.instrument.expiry.isoformat() if r.instrument.expiry else None,
                    "strike": format(r.instrument.strike, "f") if r.instrument.strike is not None else None,
                    "option_type": r.instrument.option_type.value if r.instrument.option_type else None,
                    "token": r.token,
                    "trading_symbol": r.trading_symbol,
                    "lot_size": r.instrument.lot_size,
                    "tick_size": format(r.instrument.tick_size, "f")
                    if r.instrument.tick_size is not None
                    else None,
                    "freeze_quantity": r.instrument.freeze_quantity,
                }
                for r in found
            ]
        )
        return EXIT_OK
    if not found:
        print(f"no instrument of account {account.name} matches {' '.join(args.terms)}")
        return EXIT_OK

    def text(v: object) -> str:
        return "-" if v is None else str(v)

    rows = [
        (
            r.instrument.key,
            text(r.token),
            text(r.trading_symbol),
            text(r.instrument.lot_size),
            text(r.instrument.tick_size),
            text(r.instrument.freeze_quantity),
            text(r.instrument.expiry),
        )
        for r in found
    ]
    table(("INSTRUMENT", "TOKEN", "TRADING SYMBOL", "LOT", "TICK", "FREEZE", "EXPIRY"), rows, sys.stdout)
    return EXIT_OK
