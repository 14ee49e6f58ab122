"""HaltShare's covering rules without processes: an owner alive but recording nothing still gets its
accounts cancelled on after ORPHAN_WAIT; an owner that left the membership sooner; a halt superseded
stops the watch."""

from __future__ import annotations

import asyncio
import datetime as dt

from runner.daemon.halt_share import ORPHAN_EVERY, HaltShare, halt_owner
from runner.daemon.membership import Membership
from runner.engine.killswitch import HaltPass

SINCE = dt.datetime(2026, 12, 7, 9, 15, tzinfo=dt.UTC)
ACCOUNTS = {f"acct{i}": [f"pb{i}"] for i in range(8)}


class Fake:
    def __init__(self, members: list[str]) -> None:
        self.membership = Membership("a", True)
        self.membership.set_playbooks({pb[0]: a for a, pb in ACCOUNTS.items()})
        self.members = members
        self.recorded: set[str] = set()
        self.cancelled: list[list[str]] = []
        self.now = 0.0
        self.halted = True

    async def refresh(self) -> None:
        self.membership.update(self.members)

    def passed(self, since: dt.datetime) -> set[str]:
        assert since == SINCE
        return set(self.recorded)

    async def cancel(self, accounts: list[str]) -> list[HaltPass]:
        self.cancelled.append(accounts)
        self.recorded |= set(accounts)
        return [HaltPass(a, SINCE) for a in accounts]

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def share(self) -> HaltShare:
        s = HaltShare(self.membership, self.refresh, self.passed, self.cancel, lambda: self.halted)
        s.sleep, s.monotonic = self.sleep, lambda: self.now
        return s


def _owned(f: Fake, who: str) -> set[str]:
    return {a for a, pb in ACCOUNTS.items() if halt_owner(a, pb, f.membership) == who}


def test_a_live_owner_recording_nothing_is_covered_after_the_wait() -> None:
    f = Fake(["a", "b"])
    asyncio.run(f.refresh())
    mine, theirs = _owned(f, "a"), _owned(f, "b")
    assert mine and theirs
    share = f.share()
    results = asyncio.run(share.run(ACCOUNTS, SINCE))
    assert f.cancelled[0] == sorted(mine)
    assert f.cancelled[1:] == [sorted(theirs)] and f.now > share.wait
    assert {r.account for r in results} == set(ACCOUNTS)


def test_an_owner_that_left_is_covered_at_the_next_look_and_others_recorded_are_not_redone() -> None:
    f = Fake(["a", "b", "c"])
    asyncio.run(f.refresh())
    by_b, by_c = _owned(f, "b"), _owned(f, "c")
    f.recorded |= by_c  # c did its part and stopped; b died before its pass
    f.members = ["a"]
    asyncio.run(f.share().run(ACCOUNTS, SINCE))
    redone = set().union(*f.cancelled[1:]) if len(f.cancelled) > 1 else set()
    assert by_b <= set().union(*f.cancelled) and not (redone & by_c)
    assert f.now <= 2 * ORPHAN_EVERY  # the first look after ours, not the stuck-owner wait


def test_a_superseded_halt_stops_the_watch() -> None:
    f = Fake(["a", "b"])
    f.halted = False
    asyncio.run(f.share().run(ACCOUNTS, SINCE))
    asyncio.run(f.refresh())
    assert [set(c) for c in f.cancelled] == [_owned(f, "a")]
