"""Worker threads of their own for the journal work of runs prepared at their instant (fires taken over
from a dead daemon, runner.engine.core ``journal_off_loop``): off the event loop, where the instant's
burst sends, and out of asyncio's default pool, which at an instant is queued with the burst's
bookkeeping (a takeover waiting behind it went out seconds late)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from runner.journal.fastpath import own_connection

T = TypeVar("T")

WORKERS = 4  # journal connections these threads hold at once, at most

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="journal-off-loop", initializer=_own)
        return _pool


def _own() -> None:
    """Each thread journals on a connection of its own (not behind the burst's group commit)."""
    own_connection(f"journal-off-loop-{threading.current_thread().name}")


async def off_loop(call: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``call(*args, **kw)`` in one of these threads."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), partial(call, *args, **kw))
