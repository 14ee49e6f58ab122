"""Anomaly checks of a downloaded master against the last good snapshot: pure functions, each giving
:class:`Anomaly` values (a reason enum and a message a person acts on). Any anomaly quarantines the
download (see :mod:`runner.instruments.sync`): brokers have served header-only files, renamed files and
files with wrong expiries, and one bad download must never replace a good master.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.errors import InstrumentUnknown
from runner.model import Instrument

# A download with fewer rows than this fraction of the last good snapshot's is quarantined: a day's new
# listings and expiries move a master by a few percent; half of it gone is a truncated or partial file.
COLLAPSE_RATIO = 0.5


class Reason(enum.StrEnum):
    PARSE_FAILED = "parse_failed"
    NO_ROWS = "no_rows"  # the whole download has no instrument
    FILE_EMPTY = "file_empty"  # one file parsed to zero rows (header only)
    ROW_COUNT_COLLAPSE = "row_count_collapse"
    EXPIRIES_PAST = "expiries_past"
    CONTRACT_CHANGED = "contract_changed"  # lot/tick/freeze of an instrument a playbook uses
    INSTRUMENT_MISSING = "instrument_missing"  # an unexpired instrument a playbook uses is gone
    FILE_MISSING = "file_missing"  # a file of the last good snapshot is missing (or renamed)


@dataclass(frozen=True, slots=True)
class Anomaly:
    reason: Reason
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason.value, "message": self.message}


def check_rows(total: int, per_file: Mapping[str, int]) -> list[Anomaly]:
    """Zero rows in all, or a file that parsed to zero rows (a header-only file among good ones)."""
    if total == 0:
        return [Anomaly(Reason.NO_ROWS, "the download has no instrument rows (header-only or empty files)")]
    return [
        Anomaly(Reason.FILE_EMPTY, f"{name} has no instrument rows (header only?)")
        for name, count in sorted(per_file.items())
        if count == 0
    ]


def check_collapse(total: int, last_good: int | None, ratio: float = COLLAPSE_RATIO) -> list[Anomaly]:
    if not last_good or total == 0 or total >= last_good * ratio:  # zero rows: check_rows says it
        return []
    return [
        Anomaly(
            Reason.ROW_COUNT_COLLAPSE,
            f"{total} rows, down from {last_good} in the last good snapshot "
            f"(below {ratio:.0%}: truncated or partial download?)",
        )
    ]


def check_expiries(rows: Iterable[MasterRow], today: dt.date) -> list[Anomaly]:
    """Every dated contract already expired: a stale file (or an expiry decoded with the wrong epoch)."""
    latest: dt.date | None = None
    for row in rows:
        e = row.instrument.expiry
        if e is not None and (latest is None or e > latest):
            latest = e
    if latest is None or latest >= today:
        return []
    return [Anomaly(Reason.EXPIRIES_PAST, f"every expiry is already past (latest {latest}, today {today})")]


def check_files(names: Sequence[str], last_good_names: Sequence[str] | None) -> list[Anomaly]:
    if not last_good_names:
        return []
    missing = sorted(set(last_good_names) - set(names))
    added = sorted(set(names) - set(last_good_names))
    out = []
    for name in missing:
        hint = f" (renamed to {', '.join(added)}?)" if added else ""
        out.append(Anomaly(Reason.FILE_MISSING, f"{name} of the last good snapshot is missing{hint}"))
    return out


def check_playbook_instruments(
    new: InstrumentMaster, old: InstrumentMaster | None, used: Iterable[Instrument], today: dt.date
) -> list[Anomaly]:
    """Lot, tick and freeze of the instruments the playbooks name, compared with the last good snapshot:
    a changed lot size silently changes every order's quantity."""
    if old is None:
        return []
    out = []
    for inst in sorted(set(_bare(i) for i in used), key=lambda i: i.key):
        try:
            before = old.resolve(inst).instrument
        except InstrumentUnknown:
            continue  # not in the last good one either: validation reports unknown instruments
        try:
            after = new.resolve(inst).instrument
        except InstrumentUnknown:
            if inst.expiry is None or inst.expiry >= today:
                out.append(Anomaly(Reason.INSTRUMENT_MISSING, f"{inst.key} (used by a playbook) is missing"))
            continue
        for field in ("lot_size", "tick_size", "freeze_quantity"):
            a, b = getattr(before, field), getattr(after, field)
            if a != b:
                out.append(
                    Anomaly(Reason.CONTRACT_CHANGED, f"{inst.key}: {field} {a} -> {b} (used by a playbook)")
                )
    return out


def _bare(i: Instrument) -> Instrument:
    """The playbook's own lot/tick/freeze must not mask the master's (resolve prefers the master's)."""
    return Instrument(i.exchange, i.symbol, i.expiry, i.strike, i.option_type)
