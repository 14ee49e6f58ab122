"""``sync``: download an account's master through its format, hash, parse, check against the last good
snapshot, and store it content-addressed with a row in the journal's index.

A download with any anomaly (:mod:`runner.instruments.checks`) is quarantined: its files are kept for
inspection, its row says why, an ERROR is logged, :func:`alert_quarantine` is called, and the last good
snapshot stays in force. The same content synced again the same day adds nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.accounts import Account
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.masters import MasterFile, MasterFormat, MasterFormatError
from runner.instruments import checks, snapshots
from runner.instruments.checks import Anomaly, Reason
from runner.instruments.generic import format_for
from runner.instruments.index import Snapshot, SnapshotIndex, SnapshotStatus
from runner.model import Instrument

log = logging.getLogger("runner.instruments")


class SyncError(Exception):
    """The master could not be downloaded (broker or environment): nothing was stored."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    account: str
    snapshot: Snapshot  # this download's snapshot (new, or the same content synced earlier today)
    created: bool  # False: same content as a snapshot already indexed for the day
    in_force: Snapshot | None  # the snapshot a run now loads: this one if good, else the last good
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def quarantined(self) -> bool:
        return self.snapshot.status is SnapshotStatus.QUARANTINED


def trading_day(account: Account, now: dt.datetime) -> dt.date:
    return now.astimezone(ZoneInfo(account.timezone)).date()


def alert_quarantine(result: SyncResult) -> None:
    """One ERROR log line and a MASTER_QUARANTINED alert (sent where an alerts file is configured)."""
    from runner.alerts.publish import publish_master_quarantined

    reasons = "; ".join(a.message for a in result.anomalies) or "see the snapshot's reasons"
    kept = result.in_force.sha256[:12] if result.in_force else "none: no good snapshot yet"
    log.error(
        "instrument master of account %s quarantined (%s): %s; in force: %s",
        result.account,
        result.snapshot.sha256[:12],
        reasons,
        kept,
    )
    publish_master_quarantined(result.account, result.snapshot.sha256[:12], f"{reasons}; in force: {kept}")


def _parse(
    fmt: MasterFormat, files: Sequence[MasterFile]
) -> tuple[list[MasterRow], dict[str, int], list[Anomaly]]:
    """Parse file by file, so a header-only file among good ones is seen."""
    rows: list[MasterRow] = []
    per_file: dict[str, int] = {}
    for f in files:
        try:
            got = list(fmt.parse([f]))
        except (MasterFormatError, ValueError, KeyError, ArithmeticError) as exc:
            return rows, per_file, [Anomaly(Reason.PARSE_FAILED, f"{f.name}: cannot parse: {exc}")]
        per_file[f.name] = len(got)
        rows.extend(got)
    return rows, per_file, []


async def sync_account(
    account: Account,
    engine: Engine,
    *,
    state: Path,
    used: Sequence[Instrument] = (),
    now: dt.datetime | None = None,
    fmt: MasterFormat | None = None,
) -> SyncResult:
    """Sync one account; raises :class:`SyncError` when nothing could be downloaded."""
    now = now or dt.datetime.now(dt.UTC)
    fmt = fmt or format_for(account)
    if fmt is None:
        raise SyncError(
            f"account {account.name!r}: broker {account.broker!r} publishes no master runner reads"
        )
    try:
        files = await fmt.download(account)
    except Exception as exc:  # any transport or HTTP failure: the caller reports it, exit 5
        raise SyncError(
            f"account {account.name!r}: master download failed: {type(exc).__name__}: {exc}"
        ) from exc
    index = SnapshotIndex(engine)
    day = trading_day(account, now)
    sha = snapshots.content_sha256(files)
    last_good = index.last_good(account.name)
    existing = index.find(account.name, day, sha)
    if existing is not None:
        anomalies = [Anomaly(Reason(r["reason"]), r["message"]) for r in existing.reasons]
        return SyncResult(account.name, existing, False, last_good, anomalies)

    directory = state / "masters" / sha
    snapshots.write_files(directory, files)
    rows, per_file, anomalies = _parse(fmt, files)
    if not anomalies:
        anomalies += checks.check_rows(len(rows), per_file)
        anomalies += checks.check_collapse(len(rows), last_good.row_count if last_good else None)
        anomalies += checks.check_expiries(rows, day)
        anomalies += checks.check_files([f.name for f in files], last_good.files if last_good else None)
        if used and last_good is not None:
            old = load_snapshot(last_good)
            new = InstrumentMaster(rows, broker=account.broker)
            anomalies += checks.check_playbook_instruments(new, old, used, day)
    status = SnapshotStatus.QUARANTINED if anomalies else SnapshotStatus.GOOD
    if status is SnapshotStatus.GOOD:
        snapshots.write_cache(directory, rows)
    try:
        snap = index.add(
            account=account.name,
            broker=account.broker,
            trading_day=day,
            sha256=sha,
            row_count=len(rows),
            status=status,
            reasons=[a.as_dict() for a in anomalies],
            files=sorted(f.name for f in files),
            created_at=now,
            path=str(directory),
        )
    except sa.exc.IntegrityError:  # another process indexed the same content meanwhile
        found = index.find(account.name, day, sha)
        assert found is not None
        return SyncResult(account.name, found, False, index.last_good(account.name), anomalies)
    result = SyncResult(
        account.name, snap, True, snap if status is SnapshotStatus.GOOD else last_good, anomalies
    )
    if result.quarantined:
        alert_quarantine(result)
    else:
        log.info("instrument master of account %s synced: %d rows, %s", account.name, len(rows), sha[:12])
    return result


def load_snapshot(snap: Snapshot) -> InstrumentMaster:
    return snapshots.load_cache(snap.path, broker=snap.broker)
