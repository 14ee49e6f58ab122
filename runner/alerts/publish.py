"""The one publish function every hook calls, and the process's dispatcher behind it.

Without an alerts file nothing is installed and :func:`publish` is one global read. Hooks build an
:class:`~runner.alerts.events.Alert` and call :func:`publish`; no alert logic lives in engine code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runner.alerts.events import Alert, AlertEvent

if TYPE_CHECKING:
    from runner.alerts.delivery import Dispatcher

log = logging.getLogger("runner.alerts")

_dispatcher: Dispatcher | None = None


def install(dispatcher: Dispatcher | None) -> Dispatcher | None:
    """Make ``dispatcher`` the process's (None: alerts off); returns the previous one."""
    global _dispatcher
    previous, _dispatcher = _dispatcher, dispatcher
    return previous


def installed() -> Dispatcher | None:
    return _dispatcher


def publish(alert: Alert) -> None:
    """Queue ``alert`` for delivery: never blocks, never raises."""
    dispatcher = _dispatcher
    if dispatcher is None:
        return
    try:
        dispatcher.publish(alert)
    except Exception:  # an alert never fails the thing it reports on
        log.exception("alert not published")


def publish_master_quarantined(account: str, path: str, why: str) -> None:
    """For ``runner instruments sync`` (issue 14's sibling): call when a downloaded master is quarantined."""
    publish(
        Alert(AlertEvent.MASTER_QUARANTINED, f"instrument master {path} quarantined: {why}", account=account)
    )


def publish_preopen_check_failed(
    check: str, why: str, *, account: str | None = None, playbook: str | None = None
) -> None:
    """For ``runner check`` (pre-open checks): call once per failing check."""
    publish(
        Alert(AlertEvent.PREOPEN_CHECK_FAILED, f"pre-open check {check} failed: {why}",
              account=account, playbook=playbook, key=f"preopen|{check}|{account}|{playbook}")
    )  # fmt: skip
