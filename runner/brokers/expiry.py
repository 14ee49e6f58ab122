"""A live session the broker ended (:class:`runner.errors.SessionExpired`): every adapter reports each one
here when it meets it, before it logs in again (a read) or surfaces it (an order request, which the
engine's call path retries after a login). One place for the log line and the ``session_expired`` alert."""

from __future__ import annotations

import logging

from runner.errors import AuthExpired, SessionExpired

log = logging.getLogger("runner.brokers")


def report(exc: AuthExpired, account: str) -> None:
    """Log and alert ``exc`` if it says a session expired (a plain AuthExpired, e.g. a login refused, is
    not an expiry: its caller reports it as what it is)."""
    if not isinstance(exc, SessionExpired):
        return
    log.warning("broker session of %s expired (%s): logging in again", account, exc)
    from runner.alerts import hooks

    hooks.session_expired(account, str(exc))
