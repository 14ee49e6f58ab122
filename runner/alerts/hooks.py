"""One-line hooks for the daemon and the commands: each builds its alert and calls :func:`publish`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from runner.alerts.events import Alert, AlertEvent
from runner.alerts.publish import installed, publish

log = logging.getLogger("runner.alerts")


def fire_failed(pb: Any, run_id: str | None, why: str) -> None:
    publish(
        Alert(
            AlertEvent.FIRE_FAILED,
            f"fire failed: {why}",
            playbook=pb.name,
            account=pb.account,
            run_id=run_id,
            owner=pb.owner,
        )
    )


def fire_missed(pb: Any, instant: dt.datetime, why: str) -> None:
    publish(
        Alert(
            AlertEvent.FIRE_MISSED,
            f"fire at {instant.isoformat()} not run: {why}",
            playbook=pb.name,
            account=pb.account,
            owner=pb.owner,
            key=f"missed|{pb.name}|{instant.isoformat()}",
        )
    )


def missed_line(playbook: str, line: str) -> None:
    """A catch-up or sweep line (fires of a dead daemon, fires missed while none ran)."""
    publish(Alert(AlertEvent.FIRE_MISSED, line.strip(), playbook=playbook, key=f"missed|{line.strip()}"))


def kill_switch(old: Any, new: Any, reason: str | None = None, by: str | None = None) -> None:
    """``by`` (user@host) set: the command that threw the switch, which also says when no reason was given."""
    engaged = str(new) != "normal"
    event = AlertEvent.KILL_SWITCH_ENGAGED if engaged else AlertEvent.KILL_SWITCH_RELEASED
    what = f"kill switch {old} -> {new}" + (f" by {by}" if by else "")
    what += f": {reason}" if reason else (": no reason given" if by else "")
    publish(Alert(event, what, key=f"killswitch|{new}"))


def kill_switch_seen(
    claim: Callable[[], bool], old: Any, new: Any, reason: str | None, by: str | None
) -> None:
    """A daemon saw the switch flip: alert unless the command that threw it or another daemon did
    (``claim``: :meth:`runner.engine.killswitch.ControlStore.claim_alert`). Without alerts configured
    nothing is claimed, so a daemon that cannot page never keeps one that can from paging."""
    if installed() is None:
        return
    try:
        mine = claim()
    except Exception:  # a journal outage: a duplicate page beats a missed one
        log.warning("kill switch alert claim failed; alerting anyway", exc_info=True)
        mine = True
    if mine:
        kill_switch(old, new, reason, by=by)


def login_failed(account: str, why: str, *, expired: bool = False) -> None:
    event = AlertEvent.SESSION_EXPIRED if expired else AlertEvent.LOGIN_FAILED
    publish(Alert(event, f"broker login of {account} failed: {why}", account=account))


def session_expired(account: str, why: str) -> None:
    """The broker ended a live session of ``account`` (:mod:`runner.brokers.expiry`); the adapter logs in
    again. Repeats within the dedup window are one message."""
    publish(
        Alert(
            AlertEvent.SESSION_EXPIRED,
            f"broker session of {account} expired: {why}; logging in again",
            account=account,
            key=f"session_expired|{account}",
        )
    )


def journal_unreachable(why: str) -> None:
    publish(Alert(AlertEvent.JOURNAL_UNREACHABLE, f"journal unreachable: {why}", key="journal_unreachable"))


def daemon_state(owner: str, started: bool, detail: str = "") -> None:
    event = AlertEvent.DAEMON_STARTED if started else AlertEvent.DAEMON_STOPPED
    what = f"daemon {owner} {'started' if started else 'stopped'}" + (f": {detail}" if detail else "")
    publish(Alert(event, what, key=f"daemon|{owner}|{started}"))
