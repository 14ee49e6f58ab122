"""``runner db status|upgrade``: the journal's schema revision, and upgrading it explicitly.

Every command upgrades the journal at start when it is behind (one log line says so); ``runner db
upgrade`` does it ahead of time, e.g. before starting daemons of a new release. ``status`` changes
nothing. Both exit 5 when the journal was upgraded by a newer release to a schema this one cannot use.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from runner.commands.arguments import add_db_argument, add_json_argument
from runner.commands.results import print_json

if TYPE_CHECKING:
    from runner.journal import migrations

EXAMPLES = """\
  runner db status
  RUNNER_DB=postgresql://runner@db/runner runner db upgrade
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("status", "upgrade"), help="show the revision, or upgrade to this release's"
    )
    add_db_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_BROKER, CommandError
    from runner.journal import migrations
    from runner.journal.db import shared_engine

    engine = shared_engine(args.db)
    if args.action == "upgrade":
        before, after = migrations.upgrade(engine)
        if args.json:
            print_json({"before": before.as_dict(), "after": after.as_dict()})
        elif before.state is migrations.SchemaState.NEWER_COMPATIBLE:
            print(
                f"journal schema {before.current} is newer than this release's {before.head}; "
                f"compatible from {before.compatible_from}: left as is"
            )
        elif before.current == after.current:
            print(f"journal schema already at {after.current}")
        elif before.state is migrations.SchemaState.EMPTY:
            print(f"journal schema created at {after.current}")
        else:
            print(
                f"journal schema upgraded from {before.current or migrations.UNVERSIONED} to {after.current}"
            )
        return 0
    status = migrations.status(engine)
    if args.json:
        print_json({**status.as_dict(), "release": migrations.release()})
    else:
        print(_describe(status))
    if status.state is migrations.SchemaState.TOO_NEW:
        raise CommandError(
            EXIT_BROKER,
            str(migrations.SchemaTooNew(status.current or "?", status.compatible_from, status.written_by)),
        )
    return 0


def _describe(status: migrations.SchemaStatus) -> str:
    from runner.journal import migrations

    s = migrations.SchemaState
    head = f"this release (runner {migrations.release()}) is at schema {status.head}"
    pending = "; upgraded by the next command, or now with `runner db upgrade`"
    return {
        s.CURRENT: f"journal schema {status.current}: current ({head})",
        s.EMPTY: f"journal is empty: created at schema {status.head} on first use",
        s.UNVERSIONED: f"journal schema: {migrations.UNVERSIONED}; {head}{pending}",
        s.BEHIND: f"journal schema {status.current}: behind ({head}){pending}",
        s.NEWER_COMPATIBLE: f"journal schema {status.current} (written by {status.written_by}): newer than "
        f"this release, compatible from {status.compatible_from}: used as is ({head})",
        s.TOO_NEW: f"journal schema {status.current} (written by {status.written_by}): too new ({head})",
    }[status.state]
