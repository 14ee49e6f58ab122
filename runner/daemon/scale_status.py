"""What ``runner status`` shows of scale-out (issue 16): the members, what each owns, claims in flight."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from runner.daemon.membership import assignment, read_members
from runner.journal.claim_leases import in_flight
from runner.journal.fires import FireStore

SAMPLE = 5  # playbook names shown per member


def scale_view(engine: Engine, daemons: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``members``: live members (database clock) with the count and a sample of the playbooks each
    owns (of those the live daemons load); ``claims_in_flight``: unfinished claims, holder and lease."""
    members = read_members(engine)
    loaded: dict[str, str | None] = {}  # playbook -> account, as the live daemons load them
    for d in daemons:
        if d.get("alive"):
            for name, info in d.get("playbooks", {}).items():
                loaded[name] = loaded.get(name) or (info or {}).get("account")
    owned: dict[str, list[str]] = {m: [] for m in members}
    for name, member in sorted(assignment(loaded, members).items()):  # what the daemons compute
        owned[member].append(name)
    store = FireStore(engine, owner="status")  # read-only use
    return {
        "members": [
            {"daemon_id": m, "owns": len(owned.get(m, [])), "sample": owned.get(m, [])[:SAMPLE]}
            for m in members
        ],
        "claims_in_flight": [
            {
                "playbook": r.playbook,
                "fire_id": r.fire_id,
                "scheduled_for": r.scheduled_for.isoformat(),
                "state": r.state.value,
                "holder": r.claimed_by,
                "lease_expires": r.lease_expires.isoformat() if r.lease_expires else None,
                "taken_from": r.taken_from,
            }
            for r in in_flight(store)
        ],
    }
