"""Partitioned ownership (issue 16): which live daemon prepares and claims which playbook.

Members are the daemons whose heartbeat (``daemons.beat_db_at``, the database's clock) is younger than
:data:`MEMBER_STALE` and that have not stopped. Each playbook is owned by one member by rendezvous
(highest-random-weight) hashing: stable while the membership stands, and when a member joins or leaves
only the playbooks it gains or held move. The fire claim stays the exactly-once guard underneath, so two
members that briefly disagree about the membership both try, and one wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.fires import daemons, read
from runner.liveness import db_clock

MEMBER_STALE = dt.timedelta(seconds=4)  # no beat (database clock) for this long: no longer a member


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
    """This daemon's view: the members and whether it owns a playbook. ``partitioned`` False (a single
    SQLite daemon): it owns everything, as before."""

    def __init__(self, me: str, partitioned: bool) -> None:
        self.me = me
        self.partitioned = partitioned
        self.members: tuple[str, ...] = (me,)
        self._owns: dict[str, bool] = {}  # playbook -> owned, for ``_owns_for`` (hashing is not free)
        self._owns_for: tuple[str, ...] = self.members

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
        if self._owns_for != self.members:
            self._owns, self._owns_for = {}, self.members
        owned = self._owns.get(playbook)
        if owned is None:
            owned = self._owns[playbook] = owner_of(playbook, self.members) == self.me
        return owned

    def successor(self, playbook: str, gone: str) -> str | None:
        """Who takes over ``gone``'s claim of ``playbook``: its owner among the members but ``gone``."""
        return owner_of(playbook, [m for m in self.members if m != gone])
