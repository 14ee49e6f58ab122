"""Daily re-login: each account with ``relogin_at`` logs its broker in afresh at that local time."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from runner.alerts import hooks as alerts
from runner.clock import Clock
from runner.daemon.arming import Timers
from runner.daemon.rules import daily_at

log = logging.getLogger("runner.scheduler")


class Relogin:
    def __init__(
        self,
        times: Mapping[str, tuple[str, str]],
        brokers: Callable[[], Mapping[str, Any]],
        timers: Timers,
        clock: Clock,
    ) -> None:
        self.times = dict(times)  # account -> (HH:MM, IANA zone)
        self.brokers = brokers  # the daemon's current account -> broker map
        self.timers = timers
        self.clock = clock

    def arm_all(self) -> None:
        for account in self.times:
            self.arm(account)

    def arm(self, account: str, after: dt.datetime | None = None) -> None:
        at, zone = self.times[account]
        when = daily_at(at, zone).next_after(after or self.clock.now())
        if when is not None:
            self.timers.set(f"relogin:{account}", when, self.relogin, account, when)

    async def relogin(self, account: str, when: dt.datetime) -> None:
        self.arm(account, after=when)
        broker = self.brokers().get(account)
        if broker is None:
            return
        try:
            await fresh_login(broker)
            log.info("daily re-login of %s done", account)
        except Exception as exc:
            log.exception("daily re-login of %s failed", account)
            alerts.login_failed(account, f"{type(exc).__name__}: {exc}")


async def fresh_login(broker: Any) -> None:
    """``relogin()`` (:class:`runner.brokers.base.SupportsRelogin`) forces a new login, where ``connect()``
    keeps a session that merely looks alive. A wrapper without it (e.g. a guard around the adapter) is
    looked through via its ``inner``; an object with no relogin anywhere still gets ``connect()``."""
    from runner.brokers.base import SupportsRelogin

    target = broker
    while target is not None:
        if isinstance(target, SupportsRelogin):
            await target.relogin()
            return
        target = getattr(target, "inner", None)
    await broker.connect()
