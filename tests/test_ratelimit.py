import asyncio
import time

import pytest

from runner.ratelimit import RateLimiter


async def test_tokens_are_spaced_at_the_configured_rate() -> None:
    limiter = RateLimiter(rate=200, burst=1)
    start = time.monotonic()
    waits = [await limiter.acquire(("acct", "NFO")) for _ in range(5)]
    elapsed = time.monotonic() - start
    assert waits[0] == 0
    assert elapsed >= 4 / 200 * 0.9  # four waits of ~5 ms each; a lower bound, not a timing assertion
    assert sum(waits) > 0


async def test_segments_are_independent() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert await limiter.acquire(("a", "NSE")) == 0
    # a different segment has its own bucket: no wait even though NSE just spent its token
    assert await asyncio.wait_for(limiter.acquire(("a", "NFO")), 0.5) == 0


async def test_penalize_blocks_the_key() -> None:
    limiter = RateLimiter(rate=100, burst=1)
    limiter.penalize("k", 0.05)
    assert await limiter.acquire("k") > 0


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
