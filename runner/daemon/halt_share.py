"""The halt cancel pass shared out over the members of one journal (issue 16).

Each ``runner serve`` on a shared PostgreSQL journal sees the kill switch go to HALT; each cancelling on
every account had N daemons log in everywhere and cancel the same orders N times. Here a member
cancels on the accounts it owns (the member owning the account's first playbook in the account-affine
assignment, :mod:`runner.daemon.membership`), then watches ``halt_passes`` for the others' results for
this halt (``halt_since``). An account not yet covered whose owner left the membership is re-assigned
over the members still live, and its new owner cancels on it; one still uncovered after
:data:`ORPHAN_WAIT` (an owner alive but stuck) is cancelled by every member still watching. A duplicate
cancel is harmless, a halt that skipped an account is the worst outcome, so every doubt resolves to
cancelling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from runner.daemon.membership import Membership, owner_of
from runner.engine.killswitch import HaltPass

log = logging.getLogger("runner.halt")

ORPHAN_EVERY = 0.5  # seconds between looks at the accounts other members are to cancel on
ORPHAN_WAIT = 30.0  # seconds a live owner gets to record its pass before every watcher cancels too


def halt_owner(account: str, playbooks: Sequence[str], membership: Membership) -> str | None:
    """The member that cancels on ``account`` in ``membership``'s view: the owner of its first playbook
    (an account heavier than a member's room is split; its first playbook picks one member), or by
    rendezvous over the account's name for an account no playbook names (a broker opened anyway)."""
    if playbooks:
        return membership.owner(min(playbooks))
    return owner_of(account, membership.members)


class HaltShare:
    """One member's part of one halt. ``refresh`` re-reads the membership; ``passed`` (blocking, run in a
    thread) names the accounts with a pass recorded for a halt; ``cancel`` runs the pass on accounts and
    records it; ``current`` says whether the halt is still the switch's and this daemon still running."""

    def __init__(
        self,
        membership: Membership,
        refresh: Callable[[], Awaitable[object]],
        passed: Callable[[dt.datetime], AbstractSet[str]],
        cancel: Callable[[list[str]], Awaitable[list[HaltPass]]],
        current: Callable[[], bool],
    ) -> None:
        self.membership = membership
        self.refresh = refresh
        self.passed = passed
        self.cancel = cancel
        self.current = current
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.monotonic: Callable[[], float] = time.monotonic
        self.wait = ORPHAN_WAIT

    def _mine(self, accounts: Mapping[str, Sequence[str]], among: Iterable[str]) -> list[str]:
        me = self.membership.me
        return sorted(a for a in among if halt_owner(a, accounts[a], self.membership) == me)

    async def run(self, accounts: Mapping[str, Sequence[str]], since: dt.datetime) -> list[HaltPass]:
        """Cancel on this member's accounts, then cover the others' until each has a pass for this halt.
        ``accounts``: account -> the loaded playbooks naming it. Returns the passes this member ran."""
        await self.refresh()
        pending = set(accounts) - await asyncio.to_thread(self.passed, since)  # a member joining late
        mine = self._mine(accounts, pending)
        results = await self.cancel(mine) if mine else []
        pending -= set(mine)
        started = self.monotonic()
        while pending and self.current():
            await self.sleep(ORPHAN_EVERY)
            pending -= await asyncio.to_thread(self.passed, since)
            if not pending:
                break
            await self.refresh()  # an owner gone is out of the membership: its accounts re-assigned
            take = self._mine(accounts, pending)
            if self.monotonic() - started > self.wait:
                take = sorted(pending)
                log.error(
                    "halt: no cancel pass recorded for %s within %.0f s of ours; cancelling there too",
                    ", ".join(take), self.wait,
                )  # fmt: skip
            elif take:
                log.warning(  # a member left, or joined: the assignment moved these accounts here
                    "halt: cancelling for %s, assigned here since the membership changed", ", ".join(take)
                )
            if take:
                results += await self.cancel(take)
                pending -= set(take)
        return results
