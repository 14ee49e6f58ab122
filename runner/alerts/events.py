"""What the runner tells the team: alert events, each with a severity, and one alert as data."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertEvent(enum.StrEnum):
    STEP_FAILED = "step_failed"
    FIRE_FAILED = "fire_failed"
    FIRE_MISSED = "fire_missed"
    RUN_INTERRUPTED = "run_interrupted"
    RUN_CLOSED_DEAD = "run_closed_dead"
    ACCOUNT_BUSY = "account_busy"
    ORDER_REJECTED = "order_rejected"
    OUTCOME_UNKNOWN = "outcome_unknown"
    SQUARE_OFF_NOT_FLAT = "square_off_not_flat"
    LOGIN_FAILED = "login_failed"
    SESSION_EXPIRED = "session_expired"
    MASTER_QUARANTINED = "master_quarantined"
    CALENDAR_COVERAGE = "calendar_coverage"
    JOURNAL_UNREACHABLE = "journal_unreachable"
    KILL_SWITCH_ENGAGED = "kill_switch_engaged"
    KILL_SWITCH_RELEASED = "kill_switch_released"
    DAEMON_STARTED = "daemon_started"
    DAEMON_STOPPED = "daemon_stopped"
    PREOPEN_CHECK_FAILED = "preopen_check_failed"
    TEST = "test"

    @property
    def severity(self) -> Severity:
        return SEVERITY[self]


SEVERITY: dict[AlertEvent, Severity] = {
    AlertEvent.STEP_FAILED: Severity.CRITICAL,
    AlertEvent.FIRE_FAILED: Severity.CRITICAL,
    AlertEvent.FIRE_MISSED: Severity.CRITICAL,
    AlertEvent.RUN_INTERRUPTED: Severity.WARNING,
    AlertEvent.RUN_CLOSED_DEAD: Severity.WARNING,
    AlertEvent.ACCOUNT_BUSY: Severity.WARNING,
    AlertEvent.ORDER_REJECTED: Severity.CRITICAL,
    AlertEvent.OUTCOME_UNKNOWN: Severity.CRITICAL,
    AlertEvent.SQUARE_OFF_NOT_FLAT: Severity.CRITICAL,
    AlertEvent.LOGIN_FAILED: Severity.CRITICAL,
    AlertEvent.SESSION_EXPIRED: Severity.CRITICAL,
    AlertEvent.MASTER_QUARANTINED: Severity.WARNING,
    AlertEvent.CALENDAR_COVERAGE: Severity.WARNING,
    AlertEvent.JOURNAL_UNREACHABLE: Severity.CRITICAL,
    AlertEvent.KILL_SWITCH_ENGAGED: Severity.CRITICAL,
    AlertEvent.KILL_SWITCH_RELEASED: Severity.INFO,
    AlertEvent.DAEMON_STARTED: Severity.INFO,
    AlertEvent.DAEMON_STOPPED: Severity.WARNING,
    AlertEvent.PREOPEN_CHECK_FAILED: Severity.CRITICAL,
    AlertEvent.TEST: Severity.INFO,
}

# What to do next, per event, when the publisher has nothing more specific to say.
NEXT: dict[AlertEvent, str] = {
    AlertEvent.STEP_FAILED: "see `runner show {run_id}`",
    AlertEvent.FIRE_FAILED: "see `runner show {run_id}` and the daemon's log",
    AlertEvent.FIRE_MISSED: "run it by hand if still wanted: `runner run --now PLAYBOOK`",
    AlertEvent.RUN_INTERRUPTED: "see `runner show {run_id}`; `runner run` resumes it",
    AlertEvent.RUN_CLOSED_DEAD: "its orders are looked up by the next run; see `runner show {run_id}`",
    AlertEvent.ACCOUNT_BUSY: "see `runner status`; nothing was sent",
    AlertEvent.ORDER_REJECTED: "see `runner show {run_id}`",
    AlertEvent.OUTCOME_UNKNOWN: "check the order at the broker; see `runner show {run_id}`",
    AlertEvent.SQUARE_OFF_NOT_FLAT: "flatten by hand before the close; see `runner show {run_id}`",
    AlertEvent.LOGIN_FAILED: "check the account's credentials and the broker's status",
    AlertEvent.SESSION_EXPIRED: "log in again (`runner serve` re-logs in at relogin_at)",
    AlertEvent.MASTER_QUARANTINED: "inspect the new master; the previous one stays in use",
    AlertEvent.CALENDAR_COVERAGE: "add the coming holidays to the calendar (runner/data/calendars)",
    AlertEvent.JOURNAL_UNREACHABLE: "check the database; nothing is sent while the journal is down",
    AlertEvent.KILL_SWITCH_ENGAGED: "`runner status`; `runner resume` when safe",
    AlertEvent.KILL_SWITCH_RELEASED: "",
    AlertEvent.DAEMON_STARTED: "",
    AlertEvent.DAEMON_STOPPED: "start it again if this was not planned",
    AlertEvent.PREOPEN_CHECK_FAILED: "fix it before the open: `runner check`",
    AlertEvent.TEST: "",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing to tell the team. ``key`` groups repeats for dedup (default: event, playbook, account,
    step)."""

    event: AlertEvent
    what: str
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    playbook: str | None = None
    account: str | None = None
    step: str | None = None
    run_id: str | None = None
    owner: str | None = None
    next: str | None = None
    key: str | None = None

    @property
    def severity(self) -> Severity:
        return self.event.severity

    @property
    def dedup_key(self) -> str:
        return self.key or "|".join(
            (self.event.value, self.playbook or "", self.account or "", self.step or "")
        )

    def title(self) -> str:
        where = " ".join(x for x in (self.playbook, self.step) if x)
        return f"[{self.severity.value.upper()}] {self.event.value}" + (f": {where}" if where else "")

    def body(self, count: int = 1) -> str:
        lines = [self.what]
        for label, value in (
            ("playbook", self.playbook),
            ("account", self.account),
            ("step", self.step),
            ("run", self.run_id),
            ("owner", self.owner),
        ):
            if value:
                lines.append(f"{label}: {value}")
        lines.append(f"at: {self.at.isoformat(timespec='seconds')}")
        if count > 1:
            lines.append(f"repeated {count} times")
        nxt = self.next if self.next is not None else NEXT[self.event].format(run_id=self.run_id or "RUN")
        if nxt:
            lines.append(f"next: {nxt}")
        return "\n".join(lines)
