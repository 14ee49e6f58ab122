"""0013: issue 14 (status page and /metrics): indexes for their queries (fires by time, recent runs,
intents by status and resolution; fires by state use 0009's ix_fires_state_lease).
Additive: older code runs unchanged on this schema."""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_runs_started_at", "runs", ["started_at"]),
    ("ix_intents_status_account", "order_intents", ["status", "account"]),
    ("ix_intents_resolution", "order_intents", ["resolution"]),
    ("ix_fires_scheduled_for", "fires", ["scheduled_for"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, if_not_exists=True)


def downgrade() -> None:
    raise NotImplementedError("journals are never downgraded: restore a backup instead")
