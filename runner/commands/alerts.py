"""``runner alerts test``: send a test message to every target of the alerts file, one row per target.

Exit 0 when every target accepted it, 5 when any failed (the table says which), 2 without an alerts file.
"""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """\
  runner alerts test                         # ./alerts.yaml (or $RUNNER_ALERTS, ~/.config/runner/alerts.yaml)
  runner alerts test --alerts ops-alerts.yaml --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from runner.alerts.setup import add_alerts_argument

    parser.add_argument("action", choices=("test",), help="test: send a test message to each target")
    add_alerts_argument(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from runner.alerts.delivery import apprise_sender
    from runner.alerts.events import Alert, AlertEvent
    from runner.alerts.outbox import Message
    from runner.alerts.setup import load_config
    from runner.cli import EXIT_BROKER, EXIT_OK, EXIT_USAGE, CommandError
    from runner.scrub import scrub

    config = load_config(args.alerts)
    if config is None:
        raise CommandError(EXIT_USAGE, "no alerts file (--alerts FILE, $RUNNER_ALERTS or ./alerts.yaml)")
    alert = Alert(AlertEvent.TEST, "runner alerts test: if you read this, alerts reach you")
    send = apprise_sender()
    rows: list[dict[str, Any]] = []
    for name, url in config.targets.items():
        message = Message(name, alert.event.value, alert.severity.value, alert.title(), alert.body(),
                          dt.datetime.now(dt.UTC))  # fmt: skip
        try:
            send(url, message)
        except Exception as exc:
            rows.append({"target": name, "ok": False, "error": scrub(f"{type(exc).__name__}: {exc}")})
        else:
            rows.append({"target": name, "ok": True, "error": None})
    if args.json:
        import json

        print(json.dumps({"source": config.source, "targets": rows}, indent=2))
    else:
        width = max(len(r["target"]) for r in rows)
        print(f"{'TARGET':<{width}}  RESULT")
        for r in rows:
            print(f"{r['target']:<{width}}  {'sent' if r['ok'] else 'FAILED: ' + str(r['error'])}")
    return EXIT_BROKER if any(not r["ok"] for r in rows) else EXIT_OK
