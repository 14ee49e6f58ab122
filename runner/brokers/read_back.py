"""A batch of places whose caller reads the day's order book back once after the batch.

An adapter whose broker acknowledges first and refuses later (Kotak: RMS / exchange rejections arrive
after the ack) reads each new order back after its place, so the caller learns a refusal at once. A
caller about to place several orders and then read the whole book anyway (a square-off: its exits, then
one day-book read) opens :func:`read_back_after`; inside it such an adapter returns the acknowledgement
(PENDING_NEW: not an open order, let alone a fill) and counts it in the batch, and the caller's one read
then settles every order of the batch: one request instead of one per order. Adapters that never read a
new order back ignore it, and the caller sees ``deferred == 0`` and need not read at all.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class ReadBackBatch:
    """Orders of the batch acknowledged without their own read back: the caller must read them."""

    deferred: int = 0


_batch: contextvars.ContextVar[ReadBackBatch | None] = contextvars.ContextVar("read_back_batch", default=None)


@contextmanager
def read_back_after() -> Iterator[ReadBackBatch]:
    """Places inside this block (this task and what it awaits) may skip their own read back; the
    caller promises one day-book read after the block when ``deferred`` is not zero."""
    batch = ReadBackBatch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)


def defer_read_back() -> bool:
    """For an adapter about to read a new order back: True (and counted) when the caller reads the book
    after its batch, so the adapter returns the acknowledgement instead."""
    batch = _batch.get()
    if batch is None:
        return False
    batch.deferred += 1
    return True
