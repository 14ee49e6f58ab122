"""A broker's Retry-After never parks a step: past the gateway's maximum or the caller's deadline the call
fails at once with :class:`runner.errors.WaitTooLong` (a Retryable: the broker did not act), instead of
sleeping a day with a PENDING intent. Paper broker + SQLite journal through the engine, the Kotak Neo
simulator over real sockets for the adapter's limiter."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from helpers.engine import make_env, playbook
from helpers.faulty_broker import Faulty

from runner.engine.calls import Tuning
from runner.engine.gateway import Gateway
from runner.errors import RateLimited, Unavailable, WaitTooLong
from runner.journal.tables import Resolution

MARKET = """
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}
"""


@pytest.mark.parametrize("retry_after", [86400.0, 1e12, 31.0])
async def test_a_day_long_retry_after_fails_the_step_at_once(tmp_path: Any, retry_after: float) -> None:
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", RateLimited("slow down", retry_after=retry_after))
    t0 = env.clock.now()
    report = await env.run(playbook(MARKET), broker=broker)
    assert not report.ok and env.steps(report) == {"buy": "failed"}
    assert (env.clock.now() - t0).total_seconds() < Tuning().max_retry_after  # never slept it out
    assert broker.calls["place"] == 1  # and never hammered the broker either
    errors = [c["error"] for c in env.journal.calls(run_id=report.run_id) if c["method"] == "place"]
    assert errors == ["RateLimited"]
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.resolution is Resolution.PENDING  # left for the lookup of the next start, as any
    assert await env.broker().orders() == []  # retry exhausted is; the broker never took it
    (step,) = report.steps
    assert "WaitTooLong" in step.message and "Retry-After" in step.message


async def test_a_retry_after_within_the_maximum_is_still_honoured(tmp_path: Any) -> None:
    env = make_env(tmp_path)
    broker = Faulty(env.broker()).fail("place", RateLimited("slow down", retry_after=20.0))
    t0 = env.clock.now()
    report = await env.run(playbook(MARKET), broker=broker)
    assert report.ok and broker.calls["place"] == 2
    assert (env.clock.now() - t0).total_seconds() >= 20.0


async def _gateway(tmp_path: Any, broker: Any, **tuning: Any) -> tuple[Gateway, Any]:
    env = make_env(tmp_path)
    gw = Gateway(broker(env), env.journal, env.clock, "run-1", env.account, tuning=Tuning(**tuning))
    return gw, env


async def test_a_retry_after_past_the_callers_deadline_fails_at_once(tmp_path: Any) -> None:
    gw, env = await _gateway(tmp_path, lambda env: Faulty(env.broker()).fail(
        "orders", Unavailable("maintenance", retry_after=10.0)))
    gw.deadline = env.clock.now() + dt.timedelta(seconds=5)
    t0 = env.clock.now()
    with pytest.raises(WaitTooLong) as info:
        await gw.call("orders", gw.broker.orders)
    assert env.clock.now() == t0
    assert info.value.retry_after == 10.0 and isinstance(info.value.__cause__, Unavailable)
    assert "deadline" in str(info.value)


async def test_our_own_backoff_never_sleeps_past_the_deadline(tmp_path: Any) -> None:
    gw, env = await _gateway(tmp_path, lambda env: Faulty(env.broker()).fail(
        "orders", Unavailable("busy")).fail("orders", Unavailable("busy")), backoff_base=2.0)
    gw.deadline = env.clock.now() + dt.timedelta(seconds=3)
    with pytest.raises(WaitTooLong):
        await gw.call("orders", gw.broker.orders)  # 2 s, then 4 s would end past the deadline
    assert gw.broker.calls["orders"] == 2


async def test_without_a_deadline_the_maximum_is_a_tuning(tmp_path: Any) -> None:
    gw, env = await _gateway(tmp_path, lambda env: Faulty(env.broker()).fail(
        "orders", RateLimited("slow", retry_after=90.0)), max_retry_after=120.0)
    t0 = env.clock.now()
    await gw.call("orders", gw.broker.orders)
    assert (env.clock.now() - t0).total_seconds() == 90.0
