"""The journal's index of instrument-master snapshots (table ``master_snapshots``).

One row per account, trading day (in the account's zone) and content (sha256): re-syncing the same
content adds nothing; different content the same day adds a row, which supersedes the earlier one only
if it is good. The snapshot in force for an account is its newest good row.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import ScrubbedText, UTCDateTime, create_all


class SnapshotStatus(enum.StrEnum):
    GOOD = "good"
    QUARANTINED = "quarantined"  # kept on disk for inspection; never loaded


metadata = sa.MetaData()

master_snapshots = sa.Table(
    "master_snapshots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("broker", sa.String(32), nullable=False),
    sa.Column("trading_day", sa.Date, nullable=False),  # in the account's zone
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reasons", ScrubbedText()),  # JSON list of {"reason", "message"}; empty when good
    sa.Column("files", sa.Text),  # JSON list of the downloaded file names
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # the snapshot's directory
    sa.UniqueConstraint("account", "trading_day", "sha256", name="uq_master_snapshots_day_sha"),
    sa.Index("ix_master_snapshots_account", "account", "id"),
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    account: str
    broker: str
    trading_day: dt.date
    sha256: str
    row_count: int
    status: SnapshotStatus
    reasons: list[dict[str, str]]
    files: list[str]
    created_at: dt.datetime
    path: str


def _snapshot(row: sa.RowMapping) -> Snapshot:
    return Snapshot(
        id=row["id"],
        account=row["account"],
        broker=row["broker"],
        trading_day=row["trading_day"],
        sha256=row["sha256"],
        row_count=row["row_count"],
        status=SnapshotStatus(row["status"]),
        reasons=json.loads(row["reasons"] or "[]"),
        files=json.loads(row["files"] or "[]"),
        created_at=row["created_at"],
        path=row["path"],
    )


class SnapshotIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_all(engine, metadata)

    def find(self, account: str, day: dt.date, sha256: str) -> Snapshot | None:
        q = sa.select(master_snapshots).where(
            master_snapshots.c.account == account,
            master_snapshots.c.trading_day == day,
            master_snapshots.c.sha256 == sha256,
        )
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return _snapshot(row) if row is not None else None

    def last_good(self, account: str) -> Snapshot | None:
        """The snapshot in force: the account's newest good one."""
        q = (
            sa.select(master_snapshots)
            .where(
                master_snapshots.c.account == account, master_snapshots.c.status == SnapshotStatus.GOOD.value
            )
            .order_by(master_snapshots.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return _snapshot(row) if row is not None else None

    def history(self, account: str, limit: int = 20) -> list[Snapshot]:
        q = (
            sa.select(master_snapshots)
            .where(master_snapshots.c.account == account)
            .order_by(master_snapshots.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_snapshot(r) for r in c.execute(q).mappings()]

    def add(
        self,
        *,
        account: str,
        broker: str,
        trading_day: dt.date,
        sha256: str,
        row_count: int,
        status: SnapshotStatus,
        reasons: list[dict[str, str]],
        files: list[str],
        created_at: dt.datetime,
        path: str,
    ) -> Snapshot:
        values = {
            "account": account,
            "broker": broker,
            "trading_day": trading_day,
            "sha256": sha256,
            "row_count": row_count,
            "status": status.value,
            "reasons": json.dumps(reasons),
            "files": json.dumps(files),
            "created_at": created_at,
            "path": path,
        }
        with self.engine.begin() as c:
            key = c.execute(master_snapshots.insert().values(**values)).inserted_primary_key
        assert key is not None
        new_id = key[0]
        return Snapshot(
            id=int(new_id),
            account=account,
            broker=broker,
            trading_day=trading_day,
            sha256=sha256,
            row_count=row_count,
            status=status,
            reasons=reasons,
            files=files,
            created_at=created_at,
            path=path,
        )
