import asyncio

import pytest

from runner.brokers.ratelimit import RateLimiter


class FakeTime:
    """A monotonic clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(rate: float, burst: int = 1) -> tuple[RateLimiter, FakeTime]:
    t = FakeTime()
    return RateLimiter(rate, burst, monotonic=t.monotonic, sleep=t.sleep), t


async def test_tokens_are_spaced_at_the_configured_rate() -> None:
    lim, t = limiter(rate=8)
    waits = [await lim.acquire(("acct", "NFO")) for _ in range(5)]
    assert waits[0] == 0
    assert waits[1:] == pytest.approx([1 / 8] * 4)
    assert t.now - 100.0 == pytest.approx(4 / 8)  # 5 orders take 0.5 s at 8/s: below 10/s


async def test_burst_allows_back_to_back_then_throttles() -> None:
    lim, _ = limiter(rate=5, burst=3)
    waits = [await lim.acquire("k") for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and waits[3] == pytest.approx(0.2)


async def test_segments_are_independent() -> None:
    lim, t = limiter(rate=1)
    assert await lim.acquire(("a", "NSE")) == 0
    assert await lim.acquire(("a", "NFO")) == 0  # its own bucket: no wait
    assert t.sleeps == []


async def test_concurrent_waiters_on_one_key_are_serialised() -> None:
    lim, t = limiter(rate=10)
    await asyncio.gather(*(lim.acquire("k") for _ in range(6)))
    assert t.now - 100.0 == pytest.approx(0.5)


async def test_penalize_honours_retry_after() -> None:
    lim, t = limiter(rate=100)
    lim.penalize("k", 2.0)
    assert await lim.acquire("k") == pytest.approx(2.01)
    assert t.now - 100.0 == pytest.approx(2.01)


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


@pytest.mark.parametrize("seconds", [86400.0, float("inf"), 1e300])
async def test_a_huge_penalty_is_capped(seconds: float) -> None:
    """A broker's Retry-After of a day (or garbage) must not stop the account's orders for as long."""
    lim, t = limiter(rate=10)
    lim.penalize("k", seconds)
    assert lim.blocked_for("k") == pytest.approx(lim.max_penalty + 1 / 10)  # the cap, then one token
    waited = await lim.acquire("k")
    assert waited <= lim.max_penalty + 1 / 10 and t.now - 100.0 <= lim.max_penalty + 1 / 10


@pytest.mark.parametrize("seconds", [float("nan"), -5.0])
async def test_a_nonsense_penalty_is_ignored(seconds: float) -> None:
    lim, _ = limiter(rate=10)
    lim.penalize("k", seconds)
    assert lim.blocked_for("k") == 0
    assert await lim.acquire("k") == 0


async def test_a_penalty_blocks_for_its_length() -> None:
    lim, _ = limiter(rate=10)
    lim.penalize("k", 2.0)
    assert lim.blocked_for("k") == pytest.approx(2.1)  # 2 s, then the refill of one token


def test_read_limiter_takes_the_accounts_reads_setting_else_the_brokers_default() -> None:
    from runner.accounts import RateLimit
    from runner.brokers.ratelimit import read_limiter

    default = read_limiter(RateLimit(), 15.0, 2)
    assert (default.rate, default.burst) == (15.0, 2)
    mine = read_limiter(RateLimit(reads_per_second=3, reads_burst=4), 15.0, 2)
    assert (mine.rate, mine.burst) == (3.0, 4)
