"""Command-line arguments several commands share, and logging set up from them.

Cold start: imported for every ``runner <cmd> --help``, so nothing heavy at module level (no engine,
pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO


def add_calendar_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-calendar",
        action="store_true",
        help="trade even on a closed day or outside the calendar's session (logged as a warning)",
    )


def add_playbook_arguments(parser: argparse.ArgumentParser) -> None:
    """The PLAYBOOK positional with ``--account``/``--accounts`` (run, plan)."""
    parser.add_argument("playbook", metavar="PLAYBOOK", help="playbook YAML file")
    parser.add_argument("--account", help="account name (default: the playbook's `account:`)")
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )


def add_risk_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--risk", metavar="FILE", help="global risk limits YAML (default $RUNNER_RISK)")


def add_busy_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--busy-wait",
        metavar="DURATION",
        type=_busy_wait,
        default=None,
        help="how long a step waits while another run holds the account (e.g. a square-off in progress) "
        "before it is refused, exit 4, nothing sent (default: the playbook's account_busy.wait, else 60s; "
        "0 refuses at once)",
    )


def _busy_wait(text: str) -> float:
    from runner.playbook.models import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_log_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-file", metavar="FILE", help="write JSON log lines here (appended), INFO and up, not on stderr"
    )


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def configure_logging(args: argparse.Namespace, *, progress: bool) -> None:
    import logging

    from runner import logs

    log_file = getattr(args, "log_file", None)
    if log_file:
        stream: TextIO = open(log_file, "a")  # noqa: SIM115 - lives for the process
        logs.configure(json=True, stream=stream, force=True)
    else:
        # With live progress on a TTY the console shows warnings only; otherwise JSON lines on stderr.
        logs.configure(stream=sys.stderr, level=logging.WARNING if progress else logging.INFO, force=True)
