"""``runner positions``: net quantity, average price, LTP, realised and unrealised P&L per account and
instrument, read from each account's broker (positions, quotes; the day's orders where the broker does
not report a figure). "n/a" where a figure cannot be known: never a made-up 0. ``--json`` for machines.

Exit 0 when every account was read, 5 when a broker could not be (the others are still shown)."""

from __future__ import annotations

import argparse
import sys

from runner.cli import EXIT_BROKER, EXIT_OK, CommandError
from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json
from runner.commands.session import make_broker
from runner.commands.terminal import table

EXAMPLES = """\
  runner positions                          # every account of ./accounts.yaml
  runner positions --account kotak-main --json | jq '.positions[] | {instrument, unrealised}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--account", action="append", metavar="A", help="only this account (repeatable; default: all)"
    )
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )
    add_db_argument(parser)
    add_json_argument(parser)


def _na(value: object) -> str:
    return "n/a" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from runner.clock import SystemClock
    from runner.commands.halt import _accounts
    from runner.errors import BrokerError
    from runner.views.positions import PositionLine, read_positions

    accounts = _accounts(args)
    clock = SystemClock()
    lines: list[PositionLine] = []
    errors: dict[str, str] = {}
    unreadable: dict[str, list[str]] = {}

    async def read_all() -> None:
        for account in accounts:
            try:
                broker = make_broker(account, clock=clock, db_url=args.db)
            except CommandError as exc:  # credentials missing: the other accounts are still read
                errors[account.name] = " ".join(exc.lines)
                continue
            try:
                await broker.connect()
                got, problems = await read_positions(broker, account.name)
                lines.extend(got)
                if problems:
                    unreadable[account.name] = problems
            except BrokerError as exc:
                errors[account.name] = f"{type(exc).__name__}: {exc}"
            finally:
                await broker.close()

    asyncio.run(read_all())
    code = EXIT_BROKER if errors else EXIT_OK
    if args.json:
        print_json({"positions": [p.to_json() for p in lines], "errors": errors, "unreadable": unreadable})
        return code
    out = sys.stdout
    if lines:
        rows = [
            (
                p.account,
                p.instrument,
                p.product.value,
                str(p.quantity),
                _na(p.average_price) + ("*" if "average_price" in p.computed else ""),
                _na(p.ltp),
                _na(p.realised) + ("*" if "realised" in p.computed else ""),
                _na(p.unrealised),
            )
            for p in lines
        ]
        headers = ("ACCOUNT", "INSTRUMENT", "PRODUCT", "NET", "AVG PRICE", "LTP", "REALISED", "UNREALISED")
        table(headers, rows, out)
        if any(p.computed for p in lines):
            print("* computed from the day's orders: the broker does not report it", file=out)
    else:
        print("no positions", file=out)
    for name, problems in unreadable.items():
        for problem in problems:
            print(f"{name}: unreadable position {problem}", file=out)
    for name, error in errors.items():
        print(f"{name}: {error}", file=sys.stderr)
    return code
