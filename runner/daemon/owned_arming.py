"""Arm only what this daemon owns (issue 16): a playbook another member owns gets no timer here, so N
daemons spend about the CPU of one. When the membership changes, playbooks gained are armed (and caught
up: an instant that passed while nobody had them armed is handled by the ``late:`` policy) and playbooks
lost are disarmed. The fire claim stays the exactly-once guard if two members briefly disagree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from runner.daemon.arming import Arming
from runner.daemon.loader import Entry
from runner.daemon.membership import Membership


class OwnedArming:
    def __init__(self, arming: Arming, membership: Membership) -> None:
        self.arming = arming
        self.membership = membership
        self.unowned: set[str] = set()  # names left unarmed because another member owns them

    def arm(self, entry: Entry, after: dt.datetime | None = None) -> None:
        """Arm ``entry`` if this daemon owns it; otherwise make sure it has no timer here."""
        if self.membership.owns(entry.name):
            self.unowned.discard(entry.name)
            self.arming.arm(entry, after=after)
        elif entry.name not in self.unowned:
            self.unowned.add(entry.name)
            self.arming.disarm(entry)
            entry.next_fire = None  # not counted as due here (sizes the lead and the quiet window)

    def forget(self, entry: Entry) -> None:
        """``entry`` left the directory."""
        self.unowned.discard(entry.name)
        self.arming.disarm(entry)

    def rebalance(self, entries: Iterable[Entry]) -> list[Entry]:
        """After a membership change: arm what is now ours, disarm what is not; returns those gained."""
        gained = []
        for entry in entries:
            owned = self.membership.owns(entry.name)
            if owned and entry.name in self.unowned:
                gained.append(entry)
                self.arm(entry)
            elif not owned and entry.name not in self.unowned:
                self.arm(entry)
        return gained
