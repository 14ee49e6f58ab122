"""``runner halt``: the kill switch. No new orders from any daemon on this journal; running daemons cancel
open orders within a second. ``--reduce-only`` instead allows only orders that shrink a position.
``runner resume`` lifts it."""

from __future__ import annotations

import argparse

DESCRIPTION = __doc__
EXAMPLES = """\
  runner halt --reason "exchange glitch"      # no new orders; daemons cancel open ones
  runner halt --reduce-only --reason "EOD"    # only position-reducing orders
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--reduce-only", action="store_true", help="allow only position-reducing orders")
    parser.add_argument(
        "--reason", metavar="TEXT", help="why (shown by `runner status` and in the daemon's log)"
    )
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from runner.control import Mode

    mode = Mode.REDUCE_ONLY if args.reduce_only else Mode.HALT
    return set_mode(args, mode)


def set_mode(args: argparse.Namespace, mode: object) -> int:
    """Shared with ``runner resume``: write the control row, say which daemons will see it."""
    import datetime as dt
    import getpass
    import json
    import socket

    from runner.control import ControlStore, Mode
    from runner.fires import open_engine, read_daemons

    assert isinstance(mode, Mode)
    engine = open_engine(args.db)
    now = dt.datetime.now(dt.UTC)
    state = ControlStore(engine).set(
        mode, getattr(args, "reason", None), f"{getpass.getuser()}@{socket.gethostname()}", now
    )
    live = [
        d["daemon_id"]
        for d in read_daemons(engine)
        if d["stopped_at"] is None and now - d["heartbeat_at"] < dt.timedelta(seconds=5)
    ]
    if args.json:
        print(json.dumps({**state.as_dict(), "live_daemons": live}))
        return 0
    what = {
        Mode.HALT: "HALTED: no new orders",
        Mode.REDUCE_ONLY: "REDUCE-ONLY: only position-reducing orders",
        Mode.NORMAL: "resumed: orders allowed",
    }[mode]
    print(f"{what} (since {now:%Y-%m-%d %H:%M:%S} UTC, by {state.by})")
    if live:
        extra = "; open orders are being cancelled" if mode is Mode.HALT else ""
        print(f"{len(live)} running daemon(s) will apply it within 1 s{extra}: {', '.join(live)}")
    elif mode is Mode.HALT:
        print("warning: no running daemon on this journal; nothing cancelled open orders at the broker")
    return 0
