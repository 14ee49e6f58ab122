"""Async token-bucket rate limiter keyed by (account, exchange segment).

Indian exchanges cap unregistered algos below 10 orders/s per segment per client (SEBI, Feb 2025), so
adapters acquire a token here before every order-entry request. Lookups are not throttled by default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

# Longest a broker's Retry-After may stop one key's orders (seconds). The gateway refuses to wait longer
# than its own ``Tuning.max_retry_after`` (also 30 s) and fails the call instead.
MAX_PENALTY = 30.0


class _Bucket:
    __slots__ = ("lock", "stamp", "tokens")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now
        self.lock = asyncio.Lock()


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_penalty: float = MAX_PENALTY,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_penalty = max_penalty
        self._monotonic = monotonic
        self._sleep = sleep
        self._buckets: dict[Hashable, _Bucket] = {}

    def _bucket(self, key: Hashable) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, self._monotonic())
        return bucket

    async def acquire(self, key: Hashable = None) -> float:
        """Wait for a token; return how long we waited (seconds)."""
        bucket = self._bucket(key)
        waited = 0.0
        async with bucket.lock:  # FIFO among waiters on the same key
            while True:
                now = self._monotonic()
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
                bucket.stamp = now
                if bucket.tokens >= 1 - 1e-9:  # float refill can land a hair below a whole token
                    bucket.tokens -= 1
                    return waited
                delay = (1 - bucket.tokens) / self.rate
                waited += delay
                await self._sleep(delay)

    def try_acquire(self, key: Hashable = None) -> bool:
        """A token now, without waiting (and never ahead of a waiter): True if taken."""
        bucket = self._bucket(key)
        if bucket.lock.locked():
            return False
        now = self._monotonic()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1 - 1e-9:
            bucket.tokens -= 1
            return True
        return False

    def penalize(self, key: Hashable, seconds: float) -> None:
        """Honour a broker's Retry-After: no tokens for this key for ``seconds``, at most
        :attr:`max_penalty`. A day-long (or infinite) Retry-After fails the call that got it (the
        gateway's cap); it must not also stop every later order of the account, a square-off
        included, for as long. NaN and negative values are ignored."""
        if not seconds > 0:  # also False for NaN
            return
        bucket = self._bucket(key)
        bucket.tokens = min(bucket.tokens, 0) - min(seconds, self.max_penalty) * self.rate

    def blocked_for(self, key: Hashable) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now)."""
        bucket = self._bucket(key)
        tokens = min(self.burst, bucket.tokens + (self._monotonic() - bucket.stamp) * self.rate)
        return max(0.0, (1 - tokens) / self.rate)


def read_limiter(rate_limit: Any, per_second: float, burst: int = 1) -> RateLimiter:
    """The bucket for an account's market-data reads: the account's ``rate_limit.reads_per_second`` /
    ``reads_burst`` where set, else the broker's defaults given here (one place for every adapter)."""
    rate = rate_limit.reads_per_second or per_second
    return RateLimiter(float(rate), rate_limit.reads_burst or burst)


def segment_of(exchange: str) -> str:
    """Exchange segment for throttling: cash and derivatives of one exchange are separate segments."""
    return exchange.upper()
