"""Alerts for a command: load the alerts file, start the dispatcher, flush it on the way out.

``runner run`` / ``apply`` / ``serve`` wrap their work in :func:`alerts_for`. A CLI run waits at most the
file's ``flush_seconds`` (default 5 s) for its alerts at exit; what is still unsent is kept in the
journal's outbox and sent by the next process that has alerts configured.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.alerts.config import AlertsConfig, AlertsConfigError, load_alerts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from runner.alerts.delivery import Dispatcher


def add_alerts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alerts",
        metavar="FILE",
        help="alerts file (default: $RUNNER_ALERTS, ./alerts.yaml, ~/.config/runner/alerts.yaml; none: off)",
    )


def load_config(explicit: str | os.PathLike[str] | None) -> AlertsConfig | None:
    """The config, or a CommandError: exit 2 for a missing explicit file, 1 invalid, 5 an unresolved
    target reference (an environment variable not set)."""
    from runner.cli import EXIT_BROKER, EXIT_INVALID, EXIT_USAGE, CommandError

    if explicit and not os.path.isfile(explicit):
        raise CommandError(EXIT_USAGE, f"{explicit}: no such alerts file")
    try:
        return load_alerts(explicit)
    except AlertsConfigError as exc:
        text = str(exc)
        code = EXIT_INVALID if ": error:" in text else EXIT_BROKER
        raise CommandError(code, f"alerts file: {text}") from None


@contextmanager
def alerts_for(explicit: str | os.PathLike[str] | None, engine: Engine) -> Iterator[Dispatcher | None]:
    """The process's dispatcher while the block runs (None: no alerts file), closed after it."""
    config = load_config(explicit)
    if config is None:
        yield None
        return
    from runner.alerts.delivery import Dispatcher
    from runner.alerts.outbox import Outbox
    from runner.alerts.publish import install

    dispatcher = Dispatcher(config, outbox=Outbox(engine)).start()
    previous = install(dispatcher)
    try:
        yield dispatcher
    finally:
        install(previous)
        dispatcher.close()
