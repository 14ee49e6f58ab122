"""One-line hooks for the daemon and the commands: each builds its alert and calls :func:`publish`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from runner.alerts.events import Alert, AlertEvent
from runner.alerts.publish import publish


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


def login_failed(account: str, why: str, *, expired: bool = False) -> None:
    event = AlertEvent.SESSION_EXPIRED if expired else AlertEvent.LOGIN_FAILED
    publish(Alert(event, f"broker login of {account} failed: {why}", account=account))


def journal_unreachable(why: str) -> None:
    publish(Alert(AlertEvent.JOURNAL_UNREACHABLE, f"journal unreachable: {why}", key="journal_unreachable"))


def daemon_state(owner: str, started: bool, detail: str = "") -> None:
    event = AlertEvent.DAEMON_STARTED if started else AlertEvent.DAEMON_STOPPED
    what = f"daemon {owner} {'started' if started else 'stopped'}" + (f": {detail}" if detail else "")
    publish(Alert(event, what, key=f"daemon|{owner}|{started}"))
