"""``runner halt``: the kill switch. No new orders from any daemon on this journal; running daemons cancel
open orders within a second. ``--reduce-only`` instead allows only orders that shrink a position.
``runner resume`` lifts it.

``--cancel-now`` also runs the cancel pass from this process (as a daemon does on halt): every open order on
each ``--account`` (default: every account in the accounts file, ``paper`` included) is cancelled through
the journal, read back, and counted; ``runner status`` shows the result. Exit 5 if an account could not be
reached or orders are still open after the pass."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.cli import EXIT_BROKER, EXIT_OK, EXIT_USAGE, CommandError
from runner.commands.session import make_broker

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.engine.killswitch import HaltPass

DESCRIPTION = __doc__
EXAMPLES = """\
  runner halt --reason "exchange glitch"      # no new orders; daemons cancel open ones
  runner halt --reduce-only --reason "EOD"    # only position-reducing orders
  runner halt --cancel-now --account desk1    # no daemon running: cancel desk1's open orders from here
  runner halt --reason "glitch" --alerts alerts.yaml   # also alert (kill_switch_engaged: who and why)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--reduce-only", action="store_true", help="allow only position-reducing orders")
    from runner.commands.arguments import add_log_file_argument

    add_log_file_argument(parser)  # --cancel-now's broker calls
    parser.add_argument(
        "--reason", metavar="TEXT", help="why (shown by `runner status` and in the daemon's log)"
    )
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    parser.add_argument(
        "--cancel-now",
        action="store_true",
        help="also cancel every open order now, from this process (verified; shown by `runner status`)",
    )
    parser.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help="with --cancel-now: this account only (repeatable; default every account in the file)",
    )
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )
    from runner.alerts.setup import add_alerts_argument

    add_alerts_argument(parser)  # kill_switch_engaged, with who and why, sent before exit


def run(args: argparse.Namespace) -> int:
    from runner.engine.killswitch import Mode

    if getattr(args, "log_file", None):
        from runner.commands.arguments import configure_logging

        configure_logging(args, progress=False)

    if args.account and not args.cancel_now:
        raise CommandError(EXIT_USAGE, "--account is for --cancel-now")
    mode = Mode.REDUCE_ONLY if args.reduce_only else Mode.HALT
    accounts = _accounts(args) if args.cancel_now else []  # bad names: usage error before the halt
    return set_mode(args, mode, then=(lambda: _cancel_now(args, accounts)) if args.cancel_now else None)


def _accounts(args: argparse.Namespace) -> list[Account]:
    from runner.accounts import find_accounts_file, load_accounts
    from runner.commands.inputs import check_accounts_file, load_account

    if args.account:
        return [load_account(name, args.accounts, explicit=True) for name in dict.fromkeys(args.account)]
    check_accounts_file(args.accounts)
    return sorted(load_accounts(find_accounts_file(args.accounts)).values(), key=lambda a: a.name)


def _cancel_now(args: argparse.Namespace, accounts: list[Account]) -> tuple[int, dict[str, Any], list[str]]:
    import asyncio
    import getpass
    import socket

    from runner.clock import SystemClock
    from runner.daemon.halt_pass import cancel_pass
    from runner.engine.killswitch import ControlStore, Mode
    from runner.journal.store import Journal

    clock = SystemClock()
    journal = Journal(args.db)
    store = ControlStore(journal.engine)
    state = store.get()
    # recorded with each result: daemons sharing out this halt's pass skip the accounts covered here
    since = state.since if state.mode is Mode.HALT else None
    brokers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for account in accounts:
        try:
            brokers[account.name] = make_broker(account, clock=clock, db_url=args.db)
        except CommandError as exc:  # credentials missing: this account fails, the others are cancelled
            errors[account.name] = " ".join(exc.lines)

    async def main() -> list[HaltPass]:
        try:
            return await cancel_pass(
                brokers,
                journal,
                clock,
                store,
                by=f"{getpass.getuser()}@{socket.gethostname()}",
                errors=errors,
                since=since,
            )
        finally:  # one broker failing to close never leaves the others open
            from runner.brokers.closing import close_brokers

            await close_brokers(brokers.values())

    results = asyncio.run(main())
    code = EXIT_OK if all(r.clean for r in results) else EXIT_BROKER
    return code, {"cancel_pass": [r.as_dict() for r in results]}, [f"  {r.line()}" for r in results]


def set_mode(
    args: argparse.Namespace,
    mode: object,
    then: Callable[[], tuple[int, dict[str, Any], list[str]]] | None = None,
) -> int:
    """Shared with ``runner resume``: write the control row, say which daemons will see it. ``then``
    (``--cancel-now``) runs after the row is written: its exit code, JSON fields and text lines."""
    import contextlib
    import getpass
    import socket

    from runner.alerts import hooks
    from runner.alerts.setup import alerts_for
    from runner.engine.killswitch import ControlStore, Mode
    from runner.journal.fires import open_engine

    assert isinstance(mode, Mode)
    engine = open_engine(args.db)
    with contextlib.ExitStack() as alerting:  # closing it delivers the alert (within flush_seconds)
        try:
            dispatcher = alerting.enter_context(alerts_for(getattr(args, "alerts", None), engine))
        except CommandError as exc:  # a broken alerts file never keeps the switch from being thrown
            alert_error: CommandError | None = exc
            dispatcher = None
        else:
            alert_error = None
        store = ControlStore(engine)
        old = store.get()
        now = dt.datetime.now(dt.UTC)
        by = f"{getpass.getuser()}@{socket.gethostname()}"
        alerting_it = dispatcher is not None and mode is not old.mode  # daemons then do not
        state = store.set(mode, getattr(args, "reason", None), by, now, alerted=alerting_it)
        if state.mode is not old.mode:
            hooks.kill_switch(old.mode.value, state.mode.value, state.reason, by=state.by)
        code = _report(args, engine, mode, state, now, then)
    if alert_error is not None:
        print("\n".join(["alert not sent:", *alert_error.lines]), file=sys.stderr)
        return alert_error.code if code == EXIT_OK else code
    return code


def _report(
    args: argparse.Namespace,
    engine: Any,
    mode: object,
    state: Any,
    now: dt.datetime,
    then: Callable[[], tuple[int, dict[str, Any], list[str]]] | None,
) -> int:
    """Run ``then`` and print the outcome: the new state and which daemons will see it."""
    import json

    from runner.engine.killswitch import Mode
    from runner.journal.fires import read_daemons

    assert isinstance(mode, Mode)

    live = [
        d["daemon_id"]
        for d in read_daemons(engine)
        if d["stopped_at"] is None and now - d["heartbeat_at"] < dt.timedelta(seconds=5)
    ]
    code, extra_json, extra_lines = then() if then is not None else (EXIT_OK, {}, [])
    if args.json:
        print(json.dumps({**state.as_dict(), "live_daemons": live, **extra_json}))
        return code
    what = {
        Mode.HALT: "HALTED: no new orders",
        Mode.REDUCE_ONLY: "REDUCE-ONLY: only position-reducing orders",
        Mode.NORMAL: "resumed: orders allowed",
    }[mode]
    from runner.timefmt import when
    from runner.web.snapshot import display_zone

    why = state.reason or "no reason given"
    print(f"{what} (since {when(now, display_zone(engine))}, by {state.by}: {why})")
    if live:
        extra = "; open orders are being cancelled" if mode is Mode.HALT else ""
        print(f"{len(live)} running daemon(s) will apply it within 1 s{extra}: {', '.join(live)}")
    elif mode is Mode.HALT and then is None:
        print(
            "warning: no running daemon on this journal; nothing cancelled open orders at the broker "
            "(`runner halt --cancel-now` cancels them from here)"
        )
    if then is not None:
        print("cancel pass (from this process):")
        for line in extra_lines:
            print(line)
    return code

