"""0002: issue 11 (safety across runs): process liveness, account leases, run owners and zones, the
intent's ``sent_at``, and the schema's compatibility floor.

To extend this revision (the release is not out yet): add the table or column here *and* to its
MetaData. Additive only (see README, "Journal migrations"): a new column is nullable or has a
``server_default``, so a daemon of the previous release still inserts rows while both run.
``tests/journal/test_migrations.py`` fails when a MetaData and the migrated schema differ.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- new tables ----------------------------------------------------------------------------
    # runner/liveness.py (IF NOT EXISTS: development builds created it before migrations existed)
    op.create_table(
        "processes",
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=120), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token"),
        if_not_exists=True,
    )
    # runner/journal/migrations/__init__.py: which releases may still use this schema
    op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("compatible_from", sa.String(length=32), nullable=False),
        sa.Column("written_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # runner/engine/leases.py: account leases (shared for opening steps, exclusive for account-wide ones)
    op.create_table(
        "account_leases",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account", "holder", "run_id"),
    )
    # --- new columns on existing tables (nullable, or with a server_default) ---------------------
    # runs.owner: the liveness token of the process executing the run (one run id, one process)
    op.add_column("runs", sa.Column("owner", sa.String(length=200), nullable=True))
    # runs.timezone: the playbook's IANA zone, so `runner show` prints times in it
    op.add_column("runs", sa.Column("timezone", sa.String(length=64), nullable=True))
    # order_intents.sent_at: stamped in the commit before every send; absence is measured from it
    op.add_column("order_intents", sa.Column("sent_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("journals are never downgraded: restore a backup instead")
