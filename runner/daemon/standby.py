"""Standby brokers (issue 16): with account-affine ownership (:mod:`runner.daemon.membership`) every member
knows which accounts it would inherit if any one peer left. Their brokers are opened ahead, in the
background and between instants: built (master parsed off the loop), logged in, no orders. A takeover then
finds the session open instead of building, logging in (Kotak's two steps) and warming up at the instant,
queued at a broker busy with the survivor's own burst. A standby broker no longer inheritable (the
membership changed) is closed unless this daemon owns or runs its account now.

Static IP rules (one primary plus one secondary IP per client) are why only the members that could take
an account over open one, and why ``runner serve --no-standby-brokers`` turns it off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from runner.brokers.closing import close_brokers
from runner.daemon.membership import Membership

log = logging.getLogger("runner.scheduler")

SETTLE = 5.0  # seconds the membership must stay unchanged before standbys are opened or closed
PACE = 0.1  # seconds between two standby opens: a login at a time, never a start-up storm of them


class StandbyBrokers:
    def __init__(
        self,
        pool: Any,
        membership: Membership,
        quiet: Callable[[], Awaitable[None]],
        busy: Callable[[str], bool],
        settle: float = SETTLE,
        pace: float = PACE,
    ) -> None:
        self.pool = pool  # a BrokerPool: get_broker, preload_masters; a dict of the open brokers
        self.membership = membership
        self.quiet = quiet  # until no instant is near: opening is never in a fire's lead time
        self.busy = busy  # account -> a fire of it is pending or running here
        self.opened: set[str] = set()  # accounts whose broker this opened as a standby
        self.failed: dict[str, str] = {}  # account -> why its standby could not be opened (said once)
        self.settle = settle
        self.pace = pace
        self._lock = asyncio.Lock()
        self._asked = 0  # refreshes asked for: a newer one supersedes a settling or opening older one

    async def refresh(self) -> None:
        """Once the membership stayed unchanged for ``settle`` seconds (members starting together, or
        flapping under load, would open and close sessions on every change): open the brokers of the
        accounts inheritable now, one every ``pace`` seconds and never near an instant; close those no
        longer inheritable."""
        self._asked += 1
        asked = self._asked
        await asyncio.sleep(self.settle)
        if asked != self._asked:
            return
        async with self._lock:
            await self.quiet()
            wanted = self.membership.inheritable()
            owned = self.membership.accounts_owned()
            for account in sorted(self.opened - wanted):
                if account in owned or self.busy(account):  # gained, or in use: an ordinary broker now
                    self.opened.discard(account)
                    continue
                await self._close(account)
            for account in sorted(wanted - set(self.pool)):  # also one closed by another hand meanwhile
                if asked != self._asked:  # the membership changed again: the newer refresh decides
                    return
                await self.quiet()
                await self._open(account)
                await asyncio.sleep(self.pace)

    async def _open(self, account: str) -> None:
        preload = getattr(self.pool, "preload_masters", None)
        try:
            if preload is not None:
                await asyncio.to_thread(preload, [account])  # parsed off the loop
            broker = self.pool.get_broker(account)
            self.opened.add(account)
            await broker.connect()  # the login; nothing is sent
        except Exception as exc:  # its takeover opens it as before, and says why if that fails too
            why = f"{type(exc).__name__}: {exc}"
            if self.failed.get(account) != why:
                log.warning("standby broker of account %s not opened: %s", account, why)
            self.failed[account] = why
            return
        self.failed.pop(account, None)
        log.info("standby broker of account %s open", account)

    async def _close(self, account: str) -> None:
        self.opened.discard(account)
        broker = self.pool.pop(account, None)
        if broker is not None:
            await close_brokers([broker])
            log.info("standby broker of account %s closed (no longer inheritable)", account)
