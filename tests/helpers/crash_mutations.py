"""Planted defects that prove the crash harness can fail: each one is a patch applied inside a crash
child process (a forked rehearsal: :class:`helpers.crash.Harness`; a CLI process: tests/crash_entry.py)
when ``RUNNER_CRASH_MUTATION`` (or the harness's ``mutation``) names it. Nothing in ``runner/`` knows.

* ``duplicate``: every entry is placed a second time under a second journaled client id.
* ``skip_restamp``: an intent is re-sent without being stamped PENDING (sent) again first, so its absence
  is later measured from a stale time: the double-crash re-send of issue 11 §3.
* ``square_off_twice``: the square-off step runs twice on one reading of the positions, as two
  overlapping square-offs of one account do.
"""

from __future__ import annotations

import enum
from typing import Any


class Mutation(enum.StrEnum):
    DUPLICATE = "duplicate"
    SKIP_RESTAMP = "skip_restamp"
    SQUARE_OFF_TWICE = "square_off_twice"


def _duplicate() -> None:
    from runner.engine.gateway import Gateway
    from runner.journal.tables import Purpose

    place = Gateway.place

    async def twice(
        self: Gateway, request: Any, *, slot: str, leg: int = 0, attempt: int = 0, **kw: Any
    ) -> Any:
        order = await place(self, request, slot=slot, leg=leg, attempt=attempt, **kw)
        if kw.get("purpose", Purpose.ENTRY) is Purpose.ENTRY and attempt == 0:
            await place(self, request, slot=slot, leg=leg, attempt=attempt + 1, **kw)
        return order

    Gateway.place = twice  # type: ignore[method-assign]


def _skip_restamp() -> None:
    from runner.journal.store import Journal
    from runner.journal.tables import Resolution

    set_resolutions = Journal.set_resolutions  # set_resolution (one intent) goes through it too

    def unless_pending(self: Journal, cids: Any, resolution: Resolution, *args: Any, **kw: Any) -> Any:
        if resolution is Resolution.PENDING:
            return None  # the restamp before a re-send, skipped
        return set_resolutions(self, cids, resolution, *args, **kw)

    Journal.set_resolutions = unless_pending  # type: ignore[method-assign]
    # The dedicated stamp before every re-send (PENDING again + sent_at, issue 11 §3), skipped too.
    Journal.mark_sending = lambda self, *a, **k: None  # type: ignore[method-assign]


def _square_off_twice() -> None:
    from runner.engine.steps import dispatch, square_off

    run = square_off.run

    async def twice(ctx: Any, step: Any) -> Any:
        gw = ctx.gateway
        before = await gw.positions()

        async def once(first: list[bool]) -> Any:
            real = gw.positions

            async def stale() -> Any:  # the first read of each execution sees the positions of before
                if first:
                    first.clear()
                    return before
                return await real()

            gw.positions = stale
            try:
                return await run(ctx, step)
            finally:
                del gw.positions

        await once([True])
        return await once([True])

    square_off.run = twice
    dispatch.HANDLERS["square_off"] = twice


PATCHES = {
    Mutation.DUPLICATE: _duplicate,
    Mutation.SKIP_RESTAMP: _skip_restamp,
    Mutation.SQUARE_OFF_TWICE: _square_off_twice,
}


def apply(name: str) -> None:
    PATCHES[Mutation(name)]()
