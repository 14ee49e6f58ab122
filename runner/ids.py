"""Deterministic identifiers: the same playbook, schedule slot, step and attempt always yield the same
ids, so a restarted run finds its own orders instead of placing them again."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable


def _digest(*parts: object, size: int) -> str:
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=size)
    return base64.b32encode(h.digest()).decode().rstrip("=").lower()


def legacy_run_id(playbook: str, scheduled_for: dt.datetime) -> str:
    """The first scheme, ``<yyyymmdd>-<hhmmss>-<hash>`` in UTC: only to find runs journaled under it
    (their client order ids derive from it, so they keep it for life)."""
    if scheduled_for.tzinfo is None:
        raise ValueError("scheduled_for must be timezone-aware")
    utc = scheduled_for.astimezone(dt.UTC)
    return f"{utc:%Y%m%d-%H%M%S}-{_digest(playbook, utc.isoformat(), size=5)}"


def run_id(playbook: str, scheduled_for: dt.datetime, zone: dt.tzinfo = dt.UTC) -> str:
    """``<yyyymmdd>-<hhmmss><+hhmm>-<hash>``: the slot's local date and time in ``zone`` (the playbook's;
    never the instant's own tzinfo, so the id depends on the instant only), so a rehearsal of
    1 December is labelled 1 December. The UTC offset marks the scheme (a :func:`legacy_run_id` has
    none); the hash is of the playbook and the UTC instant.

    For a new run only: callers go through :func:`run_id_in`, which keeps a journaled run's id."""
    if scheduled_for.tzinfo is None:
        raise ValueError("scheduled_for must be timezone-aware")
    local = scheduled_for.astimezone(zone)
    utc = scheduled_for.astimezone(dt.UTC)
    return f"{local:%Y%m%d-%H%M%S%z}-{_digest(playbook, utc.isoformat(), size=5)}"


def run_id_in(
    journaled: Callable[[str], bool], playbook: str, scheduled_for: dt.datetime, zone: dt.tzinfo
) -> str:
    """The id of the run of ``playbook`` for ``scheduled_for``: the one already journaled under the
    legacy scheme if ``journaled`` says so (resume, restart mid-day, catch-up), else the new one."""
    old = legacy_run_id(playbook, scheduled_for)
    return old if journaled(old) else run_id(playbook, scheduled_for, zone)


def is_legacy_run_id(text: str) -> bool:
    return _LEGACY_RUN.fullmatch(text) is not None


_LEGACY_RUN = re.compile(r"\d{8}-\d{6}-[a-z2-7]{8}")


def fire_id(playbook: str, version: str, scheduled_for: dt.datetime) -> str:
    """Identity of one scheduled fire; unique in the journal so two daemons cannot both run it."""
    return f"fire-{_digest(playbook, version, scheduled_for.astimezone(dt.UTC).isoformat(), size=10)}"


@functools.lru_cache(maxsize=4096)  # built while preparing a run, asked again at its instant
def client_order_id(run: str, step: str, leg: int = 0, attempt: int = 0) -> str:
    """Our id for one order: 18 chars ``rn`` + base32, safe for every broker's tag/remarks field."""
    return "rn" + _digest(run, step, leg, attempt, size=10)


def numeric_id(client_order_id: str) -> int:
    """A positive int64 form of a client id, for brokers whose ClientOrderId is numeric (AlphaPoint)."""
    h = hashlib.blake2b(client_order_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") & ((1 << 62) - 1) or 1


LEG_SEPARATOR = "L"


def leg_client_id(group_id: str, leg: int) -> str:
    """Client id of leg ``leg`` (1-based) of a native multileg order ``group_id``.

    Derived, not hashed, so an adapter whose broker addresses legs only through the group (ODIN's
    gateway_order_no + leg_indicator) can find a leg from our id alone, even after a restart."""
    if not 1 <= leg <= 9:
        raise ValueError("leg numbers run from 1 to 9")
    return f"{group_id}{LEG_SEPARATOR}{leg}"


def split_leg_client_id(client_order_id: str) -> tuple[str, int] | None:
    """``(group_id, leg)`` for an id made by :func:`leg_client_id`, else ``None``."""
    head, sep, tail = client_order_id.rpartition(LEG_SEPARATOR)
    if sep and len(head) == 18 and head.startswith("rn") and tail.isdigit() and len(tail) == 1:
        return head, int(tail)
    return None


_OURS = re.compile(r"rn[a-z2-7]{16}(?:L[1-9])?")


def is_client_order_id(text: str) -> bool:
    """True when ``text`` has the shape of an id made by :func:`client_order_id` or
    :func:`leg_client_id`: adapters use it to tell our orders in a broker's book from foreign ones."""
    return _OURS.fullmatch(text) is not None
