"""``runner resume``: lift ``runner halt`` / ``runner halt --reduce-only``; daemons see it within a second."""

from __future__ import annotations

import argparse

DESCRIPTION = __doc__
EXAMPLES = """\
  runner resume --reason "all clear"
  runner resume --reason "all clear" --alerts alerts.yaml   # the desk is told who lifted it and why
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--reason",
        metavar="TEXT",
        help="why it is lifted (journaled with the change, shown in the daemon's log; without it the log "
        'says "no reason given")',
    )
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    from runner.alerts.setup import add_alerts_argument

    add_alerts_argument(parser)  # kill_switch_released, with who and why, sent before exit


def run(args: argparse.Namespace) -> int:
    from runner.commands.halt import set_mode
    from runner.engine.killswitch import Mode

    return set_mode(args, Mode.NORMAL)
