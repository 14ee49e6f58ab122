"""Rendezvous ownership (issue 16): balance, minimal movement, membership on the database clock."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from runner.daemon.membership import MEMBER_STALE, Membership, assign, live_members, owner_of

PLAYBOOKS = [f"pb-{i:04d}" for i in range(3000)]
MEMBERS = ["desk1-101-aa", "desk2-202-bb", "desk3-303-cc"]


def test_three_members_share_3000_playbooks_within_20_percent() -> None:
    counts = {m: len(keys) for m, keys in assign(PLAYBOOKS, MEMBERS).items()}
    fair = len(PLAYBOOKS) / len(MEMBERS)
    assert sum(counts.values()) == len(PLAYBOOKS)
    assert all(abs(n - fair) <= 0.2 * fair for n in counts.values()), counts


def test_a_member_leaving_moves_only_its_own_playbooks() -> None:
    before = {k: owner_of(k, MEMBERS) for k in PLAYBOOKS}
    after = {k: owner_of(k, MEMBERS[:2]) for k in PLAYBOOKS}
    moved = [k for k in PLAYBOOKS if before[k] != after[k]]
    assert moved and all(before[k] == MEMBERS[2] for k in moved)


def test_a_member_joining_takes_about_a_fair_share_and_nothing_else_moves() -> None:
    before = {k: owner_of(k, MEMBERS) for k in PLAYBOOKS}
    joined = [*MEMBERS, "desk4-404-dd"]
    after = {k: owner_of(k, joined) for k in PLAYBOOKS}
    moved = [k for k in PLAYBOOKS if before[k] != after[k]]
    assert all(after[k] == "desk4-404-dd" for k in moved)
    assert abs(len(moved) - len(PLAYBOOKS) / 4) <= 0.2 * len(PLAYBOOKS) / 4


def test_assignment_does_not_depend_on_member_order() -> None:
    assert assign(PLAYBOOKS[:50], MEMBERS) == {
        m: v for m, v in assign(PLAYBOOKS[:50], MEMBERS[::-1]).items()
    }
    assert Counter(owner_of(k, MEMBERS[::-1]) for k in PLAYBOOKS) == Counter(
        owner_of(k, MEMBERS) for k in PLAYBOOKS
    )


def test_live_members_are_judged_on_the_database_clock() -> None:
    now = dt.datetime(2026, 12, 1, 9, 15, tzinfo=dt.UTC)
    rows = [
        {"daemon_id": "a", "stopped_at": None, "beat_db_at": now - dt.timedelta(seconds=1)},
        {"daemon_id": "b", "stopped_at": None, "beat_db_at": now - MEMBER_STALE},  # stale
        {"daemon_id": "c", "stopped_at": now, "beat_db_at": now},  # stopped
        {"daemon_id": "d", "stopped_at": None, "beat_db_at": None},  # a release without the column
    ]
    assert live_members(rows, now) == ["a"]


def test_unpartitioned_daemon_owns_everything_and_always_counts_itself() -> None:
    single = Membership("me", partitioned=False)
    single.update(["other"])
    assert all(single.owns(k) for k in PLAYBOOKS[:100])
    split = Membership("me", partitioned=True)
    assert split.update(["other"]) and split.members == ("me", "other")
    owned = [k for k in PLAYBOOKS if split.owns(k)]
    assert 0 < len(owned) < len(PLAYBOOKS)
    assert all(split.successor(k, "me") == "other" for k in owned)


def test_ownership_is_hashed_once_per_membership_and_follows_a_change(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The status, the rebalance and every fire ask ``owns``: rendezvous hashing over 3,000 playbooks
    each heartbeat was a daemon's fixed cost. Asked again, the answer is remembered until the members
    change; then it is the new membership's."""
    import runner.daemon.membership as membership

    mine = {k: owner_of(k, MEMBERS) == MEMBERS[0] for k in PLAYBOOKS}
    mine_of_two = {k: owner_of(k, MEMBERS[:2]) == MEMBERS[0] for k in PLAYBOOKS}
    calls = Counter[str]()
    weight = membership._weight

    def counted(member: str, key: str) -> int:
        calls[key] += 1
        return weight(member, key)

    monkeypatch.setattr(membership, "_weight", counted)
    me = Membership(MEMBERS[0], partitioned=True)
    me.update(MEMBERS)
    first = {k: me.owns(k) for k in PLAYBOOKS}
    again = {k: me.owns(k) for k in PLAYBOOKS}
    assert first == again and all(n == len(MEMBERS) for n in calls.values())
    assert first == mine
    assert not me.update(MEMBERS)  # the same members: nothing recomputed
    assert {k: me.owns(k) for k in PLAYBOOKS} == first and all(n == 3 for n in calls.values())
    assert me.update(MEMBERS[:2])  # one left: ours now includes some of its playbooks
    after = {k: me.owns(k) for k in PLAYBOOKS}
    assert after == mine_of_two and all(n == 5 for n in calls.values())
    assert sum(after.values()) > sum(first.values())
