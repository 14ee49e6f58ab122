"""Brokers of accounts a member no longer owns, closed (issue 16).

A rebalance moves accounts between members (:mod:`runner.daemon.membership`); the member that lost one
kept its broker open until shutdown: a logged-in session, its connections and warm pool, its re-login
timer. Here the daemon's broker pool closes an account's broker once the account is not owned and no
work of this daemon uses it: a fire in flight (woken, claimed, prepared, running; also a claim taken
over) or a halt cancel pass holds its account (:meth:`AccountUse.hold`), and the broker is closed when
the last hold ends. A broker the pool opens again later (a fire of a playbook regained) is a fresh one.
Only brokers of a :class:`~runner.daemon.executor.BrokerPool` are closed: brokers a caller handed in are
the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from runner.brokers.closing import close_brokers
from runner.daemon.executor import BrokerPool

log = logging.getLogger("runner.scheduler")


class AccountUse:
    def __init__(self, brokers: Mapping[str, Any]) -> None:
        self.brokers = brokers
        self.in_use: Counter[str] = Counter()  # account -> holds (fires in flight, halt passes)
        self.owned: AbstractSet[str] | None = None  # accounts owned now; None: all (not partitioned)
        self._closing: set[asyncio.Future[None]] = set()  # close() calls running (held until done)
        # accounts whose broker another part keeps open though not owned: the standby brokers
        # (runner.daemon.standby), which close their own once no longer inheritable
        self.kept: Callable[[], AbstractSet[str]] = frozenset

    @contextlib.contextmanager
    def hold(self, *accounts: str) -> Iterator[None]:
        """While the block runs, the brokers of ``accounts`` stay open; after it, one not owned is closed."""
        self.in_use.update(accounts)
        try:
            yield
        finally:
            self.in_use.subtract(accounts)
            idle = [a for a in accounts if self.in_use[a] <= 0]
            for a in idle:
                del self.in_use[a]
            if self.owned is not None and idle:
                self.close_unowned(idle)

    def rebalanced(self, owned: AbstractSet[str]) -> list[str]:
        """The accounts owned now (after a membership change or a reload); closes the brokers of the
        others not in use. Returns the accounts whose broker was closed."""
        self.owned = owned
        return self.close_unowned(list(self.brokers))

    def close_unowned(self, accounts: Iterable[str]) -> list[str]:
        pool = self.brokers
        if not isinstance(pool, BrokerPool) or self.owned is None:
            return []
        kept = self.kept()
        gone = [a for a in accounts if a in pool and a not in self.owned | kept and not self.in_use[a]]
        for account in gone:
            task = asyncio.ensure_future(close_brokers([pool.pop(account)]))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if gone:
            log.warning("accounts no longer owned here, brokers closed: %s", ", ".join(sorted(gone)))
        return gone

    async def drained(self) -> None:
        """Until every close started has finished."""
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
