"""Arm only what this daemon owns (issue 16): timers for its own playbooks only; a membership change arms
what it gained (returned, for catch-up) and disarms what it lost."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from runner.daemon.membership import Membership, owner_of
from runner.daemon.owned_arming import OwnedArming

T = dt.datetime(2026, 12, 1, 3, 45, tzinfo=dt.UTC)


@dataclass
class FakeEntry:
    name: str
    next_fire: dt.datetime | None = None


class FakeArming:
    def __init__(self) -> None:
        self.timers: set[str] = set()

    def arm(self, entry: FakeEntry, after: dt.datetime | None = None) -> None:
        entry.next_fire = T
        self.timers.add(entry.name)

    def disarm(self, entry: FakeEntry) -> None:
        self.timers.discard(entry.name)


def test_only_owned_playbooks_get_timers_and_a_leaving_members_move_to_the_rest() -> None:
    membership = Membership("a", partitioned=True)
    membership.update(["a", "b", "c"])
    arming = FakeArming()
    owned = OwnedArming(arming, membership)  # type: ignore[arg-type]
    entries = [FakeEntry(f"pb{i:02d}") for i in range(60)]
    for e in entries:
        owned.arm(e)  # type: ignore[arg-type]
    mine = {e.name for e in entries if owner_of(e.name, ["a", "b", "c"]) == "a"}
    assert arming.timers == mine and 0 < len(mine) < 60
    assert all((e.next_fire is None) == (e.name not in mine) for e in entries)

    membership.update(["a", "b"])  # c left
    gained = owned.rebalance(entries)  # type: ignore[arg-type]
    now_mine = {e.name for e in entries if owner_of(e.name, ["a", "b"]) == "a"}
    assert now_mine > mine  # rendezvous hashing: a keeps its own and takes some of c's
    assert {e.name for e in gained} == now_mine - mine
    assert arming.timers == now_mine

    membership.update(["a", "b", "c", "d"])  # two join: a loses some, gains none
    assert owned.rebalance(entries) == []  # type: ignore[arg-type]
    assert arming.timers == {e.name for e in entries if owner_of(e.name, ["a", "b", "c", "d"]) == "a"}


def test_not_partitioned_arms_everything() -> None:
    arming = FakeArming()
    owned = OwnedArming(arming, Membership("a", partitioned=False))  # type: ignore[arg-type]
    entries = [FakeEntry(f"pb{i}") for i in range(10)]
    for e in entries:
        owned.arm(e)  # type: ignore[arg-type]
    assert len(arming.timers) == 10
