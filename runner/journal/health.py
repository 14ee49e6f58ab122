"""Whether this process can reach its journal: an outage is said loudly ONCE (an ERROR line and the
JOURNAL_UNREACHABLE alert), not once per heartbeat and poll, and its end is said too.

Nothing here decides safety: the engine never sends an order whose intent is not committed, so a journal
that refuses writes already stops every send. This only reports it, keeps the flag for the daemon's status
and runs what was put off until the journal is back (fires that could not be claimed meanwhile are claimed
then, and judged by their ``late`` policy: missed, loudly, or run if still within it). The pool's
pre-ping and the hot paths' invalidate-on-error reconnect. While down, the daemon's heartbeat write is
the probe, on a backoff (:meth:`JournalHealth.probe_delay`: 0.5 s doubling to 5 s), so a short outage
ends fast and a long one is not hammered; the daemon's other journal loops wait for it (:meth:`idle`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from runner.journal.db import database_problem

log = logging.getLogger("runner.journal")

PROBE_FIRST = 0.5  # seconds to the first probe of a journal gone down: a blip is over fast
PROBE_MAX = 5.0  # seconds between probes at most: a dead server is not hammered


class JournalHealth:
    def __init__(self) -> None:
        self.down_since: dt.datetime | None = None
        self.problem: str | None = None
        self.outages = 0
        self._later: list[Callable[[], None]] = []
        self._lock = threading.Lock()  # trouble() is also called from worker threads
        # A prober (the daemon's heartbeat) retries on :meth:`probe_delay`'s backoff while down and ends
        # the outage with :meth:`ok`; the other loops then leave the dead server alone (:meth:`idle`).
        self.probed = False
        self._probe_next = PROBE_FIRST
        self.probes = 0  # probes made in the current (or last) outage

    def probe_delay(self) -> float:
        """Seconds until the next probe while down: 0.5 s doubling to at most 5 s (reset by an outage's
        start and end)."""
        with self._lock:
            delay = self._probe_next
            self._probe_next = min(delay * 2, PROBE_MAX)
            self.probes += 1
            return delay

    def idle(self) -> bool:
        """Whether work that would only hit the database should wait: down, and a prober will tell."""
        return self.probed and self.down_since is not None

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def trouble(self, exc: BaseException, what: str) -> bool:
        """``exc`` (raised by ``what``) is the database being unreachable or refusing writes: said once per
        outage. Returns False for anything else (a bug: the caller reports it as before)."""
        problem = database_problem(exc)
        if problem is None:
            return False
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = dt.datetime.now(dt.UTC)
                self.problem = problem
                self.outages += 1
                self._probe_next, self.probes = PROBE_FIRST, 0
        if not first:
            log.debug("journal still unreachable (%s): %s", what, problem)
            return True
        log.error(
            "journal unreachable (%s failed): %s; nothing is sent until it is back (intents cannot be "
            "committed), fires due meanwhile are claimed and judged by their late policy when it returns",
            what,
            problem,
        )
        from runner.alerts import hooks as alerts

        alerts.journal_unreachable(f"{what} failed: {problem}")
        return True

    def when_back(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the journal is reachable again."""
        with self._lock:
            self._later.append(action)

    def ok(self) -> None:
        """A journal write just succeeded: the end of an outage, if there was one."""
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since, self.problem = self.down_since, None, None
            later, self._later = self._later, []
            self._probe_next = PROBE_FIRST
        if since is None:
            return
        from runner.journal import db, groupcommit

        db.invalidate_server_connections()
        groupcommit.invalidate_server_connections()
        took = (dt.datetime.now(dt.UTC) - since).total_seconds()
        log.warning(
            "journal reachable again after %.1fs (%d probe(s)); %d fire(s) due meanwhile are claimed now",
            took,
            self.probes,
            len(later),
        )
        for action in later:
            action()

    def as_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "down_since": self.down_since.isoformat() if self.down_since else None,
            "problem": self.problem,
            "outages": self.outages,
        }


PROCESS = JournalHealth()  # this process's view of its journal (one journal per daemon process)

__all__ = ["PROBE_FIRST", "PROBE_MAX", "PROCESS", "JournalHealth"]
