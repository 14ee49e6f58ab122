"""The holder's side of claim leases (issue 16), judged locally so the fire path gains no round trip.

A claim's lease runs :data:`LEASE` seconds on the database's clock from each write (claim, renewal).
The holder notes its own monotonic time *before* that write, so its local deadline,
``before + LEASE - SKEW_MARGIN``, falls ahead of the database's expiry in real time. At the instant it
sends only if that deadline has not passed; otherwise it gives the claim up unsent.

Clock-skew assumption (stated in the README): every daemon host's wall clock is within
:data:`SKEW_MARGIN` of the database server's, and monotonic clocks run at the same rate as the
database's over a lease. Then a holder cannot send after its lease lapsed, and cannot send before its
instant on the database's clock minus the margin: a claim whose lease lapsed no later than its instant
was never sent, and a survivor may take it over (:func:`runner.journal.claim_leases.take_over`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

LEASE = 1.0  # seconds a claim's lease lasts from each write (database clock)
RENEW_EVERY = 0.2  # seconds between renewals while claims are pending
SKEW_MARGIN = 0.3  # seconds: the clock-skew bound (see the module docstring)
# Tests only: seconds the local lease check reads ahead (+) or behind (-) of the clock the lease was
# stamped with, i.e. the host's clock off by that much over a lease. A constant offset of one clock
# would cancel out, so it applies to the check (:meth:`LeaseBook.now`), not the stamp.
SKEW_ENV = "RUNNER_LEASE_SKEW"


class LeaseBook:
    """Local deadlines (monotonic seconds) of the claims this daemon holds and has not sent yet."""

    def __init__(
        self,
        lease: float = LEASE,
        margin: float = SKEW_MARGIN,
        mono: Callable[[], float] = time.monotonic,
        skew: float | None = None,
    ) -> None:
        self.lease = lease
        self.margin = margin
        self.mono = mono
        self.skew = float(os.environ.get(SKEW_ENV, "0") or 0) if skew is None else skew
        self.deadlines: dict[str, float] = {}  # fire id -> local deadline
        # Claims this daemon gave up unsent (lease lapsed before its instant): known locally to be unsent,
        # so this daemon may take them back itself, e.g. when it is the only member, or its give-up
        # write was lost in a journal outage and no survivor can see the claim as takeable.
        self.forfeited: set[str] = set()
        self._lock = threading.Lock()  # the renewal thread and the event loop both write
        self._early: dict[str, float] = {}  # renewed before the loop noted the claim: fire id -> stamp
        self.claiming = 0  # claims being written by the event loop (their results not noted yet)
        self.on_forfeit: Callable[[], None] | None = None  # the takeover loop looks at once

    def stamp(self) -> float:
        """Local time to take just before a lease's write (claim, renewal, takeover)."""
        return self.mono()

    def now(self) -> float:
        """Local time as the send check reads it (skewed in tests)."""
        return self.mono() + self.skew

    def granted(self, fire_ids: Iterable[str], before: float) -> None:
        """Leases written after local time ``before`` (taken from :meth:`stamp` before the write)."""
        with self._lock:
            for fid in fire_ids:
                stamp = max(before, self._early.pop(fid, before))
                self.deadlines[fid] = stamp + self.lease - self.margin
                self.forfeited.discard(fid)  # held again (a claim whose earlier result was lost)

    def renewed(self, held: set[str], before: float) -> None:
        """A renewal written after ``before`` extended the leases ``held``. A claim not among them is
        left to lapse on its own deadline (it may have been claimed after the renewal looked); one
        renewed before :meth:`granted` keeps that stamp for it. Claims sent or given back stay gone."""
        with self._lock:
            for fid in held:
                if fid in self.deadlines and self.deadlines[fid] != float("-inf"):
                    self.deadlines[fid] = before + self.lease - self.margin
            self._early = {fid: before for fid in held if fid not in self.deadlines}

    def lost(self, fire_id: str) -> None:
        with self._lock:
            if fire_id in self.deadlines:
                self.deadlines[fire_id] = float("-inf")

    def sendable(self, fire_id: str) -> bool:
        """Whether the claim's lease still holds locally; a fire without a lease (SQLite) always may."""
        deadline = self.deadlines.get(fire_id)
        return deadline is None or self.now() < deadline

    def done(self, fire_id: str) -> None:
        """Sent, given back or finished: no longer renewed."""
        with self._lock:
            self.deadlines.pop(fire_id, None)

    def idle(self) -> bool:
        """Nothing to renew: no claim held unsent, none being written (the renewal thread skips its
        write, so idle daemons cost the database nothing)."""
        return not self.claiming and not self.pending()

    def forfeit(self, fire_id: str) -> None:
        """Given up unsent: no longer renewed, and this daemon's own to take back."""
        with self._lock:
            self.deadlines.pop(fire_id, None)
            self.forfeited.add(fire_id)
        if self.on_forfeit is not None:
            self.on_forfeit()

    def pending(self) -> list[str]:
        with self._lock:
            return [fid for fid, d in self.deadlines.items() if d != float("-inf")]
