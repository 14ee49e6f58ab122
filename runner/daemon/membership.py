"""Partitioned ownership (issue 16): which live daemon prepares and claims which playbook.

Members are the daemons whose heartbeat (``daemons.beat_db_at``, the database's clock) is younger than
:data:`MEMBER_STALE` and that have not stopped. Ownership is account-affine (:func:`assignment`): all the
playbooks of one account go to one member, so each daemon logs in to, keeps sessions, masters and
account leases for its own accounts only (per-playbook hashing had each of 3 daemons do that for nearly
every account). Accounts are placed by rendezvous (highest-random-weight) hashing with bounded loads
weighted by playbook count; an account that fits in no member's room is split per playbook. Every member
computes the same assignment from the same inputs (the members, the loaded playbooks and their
accounts). A playbook this daemon has not loaded (yet) is placed by rendezvous over its name. The fire
claim stays the exactly-once guard underneath, so two members that briefly disagree both try, and one
wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.fires import daemons, read
from runner.liveness import db_clock

MEMBER_STALE = dt.timedelta(seconds=4)  # no beat (database clock) for this long: no longer a member
# A member's load may exceed a fair share by at most this fraction (and by 0.2 / (members - 1) with many
# members, so the lightest stays within 20% below): slack lets accounts stay whole, the bound keeps fires
# per daemon within +-20% of a fair share.
BALANCE = 0.05


def _weight(member: str, key: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(key: str, members: Iterable[str]) -> str | None:
    """The member owning ``key``: the one with the highest weight (ties: the smaller id)."""
    best: tuple[int, str] | None = None
    for m in members:
        w = _weight(m, key)
        if best is None or w > best[0] or (w == best[0] and m < best[1]):
            best = (w, m)
    return None if best is None else best[1]


def assign(keys: Iterable[str], members: Sequence[str]) -> dict[str, list[str]]:
    """member -> the keys it owns (every member listed, possibly with none)."""
    out: dict[str, list[str]] = {m: [] for m in members}
    for k in keys:
        owner = owner_of(k, members)
        if owner is not None:
            out[owner].append(k)
    return out


def _ranked(members: Sequence[str], key: str) -> list[str]:
    """Members by rendezvous preference for ``key``: highest weight first (ties: the smaller id)."""
    return sorted(members, key=lambda m: (-_weight(m, key), m))


def assignment(playbooks: Mapping[str, str | None], members: Iterable[str]) -> dict[str, str]:
    """playbook -> its member, account-affine. ``playbooks``: name -> account (None: the playbook is a
    group of its own). Accounts, in an order hashed from their names (not from weights or members: stable), go
    whole to their most preferred member with room for them under a cap of a fair share plus
    :data:`BALANCE`; one that fits nowhere whole (heavier than a member's room) is split per playbook over
    its preference order, each member filled to the cap. A pure function of its inputs: every member
    computes the same."""
    ms = sorted(set(members))
    if not ms:
        return {}
    if len(ms) == 1:
        return dict.fromkeys(playbooks, ms[0])
    groups: dict[str, list[str]] = {}
    for name, account in playbooks.items():
        groups.setdefault(account if account is not None else f"\x00{name}", []).append(name)
    slack = min(BALANCE, 0.2 / (len(ms) - 1))
    cap = math.ceil(len(playbooks) / len(ms) * (1 + slack))  # members * cap >= playbooks: all placed
    load = dict.fromkeys(ms, 0)
    out: dict[str, str] = {}
    for account in sorted(groups, key=lambda a: (_weight("", a), a)):
        names = groups[account]
        ranked = _ranked(ms, account)
        whole = next((m for m in ranked if load[m] + len(names) <= cap), None)
        if whole is not None:
            load[whole] += len(names)
            out.update(dict.fromkeys(names, whole))
            continue
        left = sorted(names, key=lambda n: (_weight("", n), n))  # a stable order to cut the account in
        for m in ranked:
            take = left[: cap - load[m]]
            if take:
                load[m] += len(take)
                out.update(dict.fromkeys(take, m))
                left = left[len(take) :]
    return out


def live_members(rows: Iterable[Mapping[str, Any]], now: dt.datetime) -> list[str]:
    """Daemon ids not stopped whose database-clock beat is younger than :data:`MEMBER_STALE`."""
    return sorted(
        r["daemon_id"]
        for r in rows
        if r["stopped_at"] is None and r["beat_db_at"] is not None and now - r["beat_db_at"] < MEMBER_STALE
    )


def read_members(engine: Engine) -> list[str]:
    """The live members now, judged on the database's clock."""
    with read(engine) as conn:
        now = db_clock(conn)
        rows = conn.execute(
            sa.select(daemons.c.daemon_id, daemons.c.stopped_at, daemons.c.beat_db_at).where(
                daemons.c.stopped_at.is_(None), daemons.c.beat_db_at > now - MEMBER_STALE
            )
        ).all()
    return live_members((r._asdict() for r in rows), now)


class Membership:
    """This daemon's view: the members, the loaded playbooks' accounts, and whether it owns a playbook.
    ``partitioned`` False (a single SQLite daemon): it owns everything, as before."""

    def __init__(self, me: str, partitioned: bool) -> None:
        self.me = me
        self.partitioned = partitioned
        self.members: tuple[str, ...] = (me,)
        self.playbooks: dict[str, str | None] = {}  # loaded playbook -> its account (the assignment's input)
        self._owns: dict[str, bool] = {}  # playbook -> owned, for ``_owns_for`` (hashing is not free)
        self._owns_for: tuple[str, ...] = self.members
        self._owner: dict[str, str] = {}  # the assignment over ``members`` and ``playbooks``, when computed
        self._successors: dict[str, dict[str, str]] = {}  # gone member -> the assignment without it

    def set_playbooks(self, playbooks: Mapping[str, str | None]) -> bool:
        """Set the loaded playbooks (name -> account); True if they changed (the assignment may have)."""
        if playbooks == self.playbooks:
            return False
        self.playbooks = dict(playbooks)
        self._owns_for = ()  # recompute on the next ask
        return True

    def owner(self, playbook: str) -> str | None:
        """The member owning ``playbook`` in this daemon's view."""
        self._fresh()
        found = self._owner.get(playbook)
        return found if found is not None else owner_of(playbook, self.members)

    def _fresh(self) -> None:
        if self._owns_for != self.members:
            self._owns, self._owns_for = {}, self.members
            self._successors = {}
            self._owner = assignment(self.playbooks, self.members) if self.playbooks else {}

    def update(self, members: Iterable[str]) -> bool:
        """Set the members (this daemon always counts); True if they changed."""
        new = tuple(sorted(set(members) | {self.me}))
        changed = new != self.members
        self.members = new
        return changed

    def owns(self, playbook: str) -> bool:
        """Computed once per playbook per membership: the status, the rebalance and every fire ask."""
        if not self.partitioned:
            return True
        self._fresh()
        owned = self._owns.get(playbook)
        if owned is None:
            owned = self._owns[playbook] = self.owner(playbook) == self.me
        return owned

    def accounts_owned(self) -> set[str]:
        """The accounts of the loaded playbooks this daemon owns now."""
        return {a for p, a in self.playbooks.items() if a is not None and self.owns(p)}

    def inheritable(self) -> set[str]:
        """The accounts this daemon would gain if any one other member left (the assignment without it,
        as :meth:`successor` computes it), those it owns now left out: where a standby broker is worth
        opening (:mod:`runner.daemon.standby`). Empty when not partitioned or alone."""
        if not self.partitioned:
            return set()
        owned = self.accounts_owned()
        gained: set[str] = set()
        for gone in self.members:
            if gone == self.me:
                continue
            self._fresh()
            without = self._successors.get(gone)
            if without is None:
                rest = [m for m in self.members if m != gone]
                without = self._successors[gone] = assignment(self.playbooks, rest)
            mine = (self.playbooks[p] for p, m in without.items() if m == self.me)
            gained.update(a for a in mine if a is not None)
        return gained - owned

    def successor(self, playbook: str, gone: str) -> str | None:
        """Who takes over ``gone``'s claim of ``playbook``: its owner in the assignment over the members
        but ``gone`` (what every survivor computes once it sees ``gone`` leave)."""
        rest = [m for m in self.members if m != gone]
        if playbook not in self.playbooks:
            return owner_of(playbook, rest)
        self._fresh()
        without = self._successors.get(gone)
        if without is None:
            without = self._successors[gone] = assignment(self.playbooks, rest)
        return without.get(playbook)
