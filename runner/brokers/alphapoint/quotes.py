"""AlphaPoint quotes: one GetLevel1 per instrument (APEX has no batch snapshot call) on the account's
session, at most ``concurrency`` in flight, each taking a read token; a session that expired mid-batch
is reported (:func:`runner.brokers.expiry.report`: log line and ``session_expired`` alert, as on every
other path), logs in once and only the refused reads repeat. The broker's ``quotes``
(:mod:`runner.brokers.alphapoint.client`) picks the instruments."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from runner.brokers import expiry
from runner.brokers.alphapoint.wire import LEVEL1, level1_body, quote_from_level1
from runner.brokers.base import Quote
from runner.errors import AuthExpired, NotFound
from runner.model import Instrument

if TYPE_CHECKING:
    from runner.brokers.alphapoint.session import ApexSession
    from runner.brokers.ratelimit import RateLimiter
    from runner.clock import Clock


async def level1_quotes(
    session: ApexSession,
    wanted: Mapping[str, tuple[Instrument, int]],
    *,
    oms_id: int,
    reconnect: Callable[[], Awaitable[None]],
    read_limiter: RateLimiter,
    limit_key: tuple[str, str],
    concurrency: int,
    clock: Clock,
    account: str,
) -> dict[str, Quote]:
    """Quotes by instrument key for ``wanted`` (key -> (instrument, InstrumentId)) on an open session.
    Instruments the OMS does not find or prices at nothing are absent; any other error fails the read
    as its typed BrokerError (after every call in flight has finished)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(instrument: Instrument, instrument_id: int) -> Quote | None:
        async with gate:
            await read_limiter.acquire(limit_key)
            try:
                body = await session.call(LEVEL1, level1_body(oms_id, instrument_id), mutating=False)
            except NotFound:
                return None
            return quote_from_level1(body, instrument, instrument_id, received_at=clock.now())

    # Not through the broker's _call: its per-call re-login would let concurrent reads close each other's
    # fresh socket. Here a session that expired mid-batch logs in once and only the refused reads repeat.
    out: dict[str, Quote] = {}
    pending = wanted
    for attempt in range(2):
        results = await asyncio.gather(*(one(i, n) for i, n in pending.values()), return_exceptions=True)
        refused: dict[str, tuple[Instrument, int]] = {}
        expired: AuthExpired | None = None
        for k, result in zip(pending, results, strict=True):
            if isinstance(result, AuthExpired) and not attempt:
                refused[k] = pending[k]
                expired = expired or result
            elif isinstance(result, BaseException):
                raise result
            elif result is not None:
                out[k] = result
        if expired is None:
            break
        expiry.report(expired, account)  # once for the batch: one expiry, one login
        await session.close()
        await reconnect()
        pending = refused
    return out
