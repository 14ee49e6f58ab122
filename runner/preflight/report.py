"""One row of ``runner check``: a check on one account, its verdict, why, and what to do."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"  # ready, but worth reading (queued orders, a fire outside the session)
    FAIL = "FAIL"  # not ready


class CheckName(enum.StrEnum):
    DUE = "due"
    CALENDAR = "calendar"
    CREDENTIALS = "credentials"
    LOGIN = "login"
    MASTER = "master"
    INSTRUMENTS = "instruments"
    ROLLING = "rolling"  # rolling instruments resolved now (master + the underlying's last price)
    RATE_BUDGET = "rate budget"


@dataclass
class Row:
    account: str
    check: CheckName
    status: Status
    reason: str
    action: str = ""
    details: list[str] = field(default_factory=list)
    unreachable: bool = False  # the broker could not be reached (exit 5), not a refusal

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "check": self.check.value,
            "status": self.status.value,
            "reason": self.reason,
            "action": self.action,
            "details": self.details,
            "unreachable": self.unreachable,
        }
