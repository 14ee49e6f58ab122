"""Daily re-login: ``relogin()`` of every adapter against its simulator (a NEW login the simulator counts,
orders work on the new session past the old one's expiry), and the scheduler's re-login job at an
account's ``relogin_at`` local time on a virtual clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers.relogin import ADAPTERS, IST, T0, blitz

from runner.clock import VirtualClock
from runner.daemon.arming import Timers
from runner.daemon.relogin import Relogin
from runner.engine.killswitch import ControlView, GuardedBroker
from runner.errors import AuthExpired
from runner.model import OrderStatus


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_relogin_is_a_new_login_and_orders_work_past_the_old_sessions_expiry(
    kind: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ADAPTERS[kind](clock, monkeypatch) as s:
        await s.broker.connect()
        assert s.logins() == 1
        clock.advance(3000)  # the session is 50 minutes old, still valid
        await s.broker.connect()
        assert s.logins() == 1  # connect() keeps a live session: it cannot be the daily re-login
        await s.broker.relogin()
        assert s.logins() == 2  # the simulator saw a new login
        clock.advance(1000)  # past the first session's expiry, well inside the new one's
        placed = await s.broker.place(s.order("rnrelogin1"))
        assert placed.status in (OrderStatus.PENDING_NEW, OrderStatus.OPEN)
        found = await s.broker.get_order("rnrelogin1")
        assert found is not None and found.broker_order_id == placed.broker_order_id
        assert s.logins() == 2  # the place and the read ran on the new session


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_without_relogin_the_expired_session_fails_the_order(
    kind: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: the same steps without relogin() meet the dead session."""
    async with ADAPTERS[kind](clock, monkeypatch) as s:
        await s.broker.connect()
        clock.advance(4000)
        with pytest.raises(AuthExpired):  # an order request is never re-sent by the adapter itself
            await s.broker.place(s.order("rnrelogin2"))


# -- the scheduler's job -------------------------------------------------------------------------------


class VirtualTimers(Timers):
    """Timers on a virtual clock: jobs are kept (by id, replacing, as APScheduler does) and run by
    :meth:`run_until`, which moves the clock to each job's instant in order."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.jobs: dict[str, tuple[dt.datetime, Callable[..., Awaitable[None]], tuple[Any, ...]]] = {}

    def set(
        self, job_id: str, when: dt.datetime, func: Callable[..., Awaitable[None]], *args: Any, **opts: Any
    ) -> None:
        self.jobs[job_id] = (when, func, args)

    def cancel(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    async def run_until(self, end: dt.datetime) -> list[tuple[str, dt.datetime]]:
        ran: list[tuple[str, dt.datetime]] = []
        while self.jobs:
            job_id, (when, func, args) = min(self.jobs.items(), key=lambda kv: kv[1][0])
            if when > end:
                break
            del self.jobs[job_id]
            await self.clock.sleep_until(when)
            await func(*args)
            ran.append((job_id, when))
        await self.clock.sleep_until(end)
        return ran


async def test_relogin_job_fires_at_relogin_at_local_time_once_a_day_before_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = VirtualClock(dt.datetime(2026, 3, 2, 0, 5, tzinfo=IST))  # Monday, just after midnight local
    async with blitz(clock, monkeypatch) as s:
        account = s.broker.account.model_copy(update={"relogin_at": "08:30"})
        # What `runner serve` passes: account -> (relogin_at, zone); the pool holds guarded brokers.
        times = {account.name: (account.relogin_at, account.timezone)}
        guarded = GuardedBroker(s.broker, ControlView())
        timers = VirtualTimers(clock)
        relogin = Relogin(times, lambda: {account.name: guarded}, timers, clock)
        await s.broker.connect()
        assert s.logins() == 1
        relogin.arm_all()
        session_open = dt.datetime(2026, 3, 2, 9, 15, tzinfo=IST)
        ran = await timers.run_until(session_open)
        assert ran == [(f"relogin:{account.name}", dt.datetime(2026, 3, 2, 8, 30, tzinfo=IST))]
        assert s.logins() == 2  # a new login at 08:30, before the 09:15 session
        placed = await s.broker.place(s.order("rnrelogin3"))  # and the session works after it
        assert placed.broker_order_id
        # Re-armed once, for the next day at the same local time; nothing else fires today.
        [(when, _f, _a)] = timers.jobs.values()
        assert when == dt.datetime(2026, 3, 3, 8, 30, tzinfo=IST)
        ran = await timers.run_until(dt.datetime(2026, 3, 4, 8, 29, tzinfo=IST))
        assert [w.astimezone(IST).strftime("%d %H:%M") for _j, w in ran] == ["03 08:30"]
        assert s.logins() == 3  # one per day


async def test_relogin_job_uses_the_accounts_zone() -> None:
    clock = VirtualClock(dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC))
    timers = VirtualTimers(clock)
    relogin = Relogin({"ny": ("08:30", "America/New_York")}, lambda: {}, timers, clock)
    relogin.arm_all()
    [(when, _f, _a)] = timers.jobs.values()
    assert when == dt.datetime(2026, 3, 2, 8, 30, tzinfo=ZoneInfo("America/New_York"))
