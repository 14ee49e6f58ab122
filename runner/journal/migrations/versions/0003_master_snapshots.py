"""0003: issue 13 (the brokers' own instrument masters): the index of synced master snapshots and the
snapshot each run resolved against (``runs.master_sha``).

Additive only: a new table, and a nullable column on ``runs``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # runner/instruments/index.py: one row per account, trading day and content hash
    op.create_table(
        "master_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("broker", sa.String(length=32), nullable=False),
        sa.Column("trading_day", sa.Date(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("files", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account", "trading_day", "sha256", name="uq_master_snapshots_day_sha"),
    )
    op.create_index("ix_master_snapshots_account", "master_snapshots", ["account", "id"])
    # runs.master_sha: the instrument-master snapshot (sha256) the run resolved against; NULL: none
    op.add_column("runs", sa.Column("master_sha", sa.String(length=64), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("journals are never downgraded: restore a backup instead")
