"""Closing brokers on the way out: every adapter's ``close()`` releases what it opened (HTTP sessions,
sockets, feeds); left to the garbage collector, aiohttp logs "Unclosed client session" at ERROR."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("runner")


async def close_brokers(brokers: Iterable[Any]) -> None:
    """Close each broker; one that fails to close is logged and never keeps the others open."""
    for broker in list(brokers):
        try:
            await broker.close()
        except Exception as exc:  # closing is best effort: the process is leaving either way
            log.warning("closing broker %s: %s: %s", getattr(broker, "name", "?"), type(exc).__name__, exc)


__all__ = ["close_brokers"]
