"""0009: issue 16 (scale out on PostgreSQL): fire claims as leases, membership on the database clock.

Additive: nullable columns and an index only. ``fires.lease_expires`` is the claim's lease (database
clock; NULL: a claim of a release without leases, or a single daemon on SQLite); ``fires.taken_from``
names the holder a survivor took an unsent claim over from; ``daemons.beat_db_at`` is the heartbeat on
the database's clock (membership: runner/daemon/membership.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("fires", sa.Column("lease_expires", sa.DateTime(), nullable=True))
    op.add_column("fires", sa.Column("taken_from", sa.String(length=64), nullable=True))
    op.create_index("ix_fires_state_lease", "fires", ["state", "lease_expires"])
    op.add_column("daemons", sa.Column("beat_db_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("daemons", "beat_db_at")
    op.drop_index("ix_fires_state_lease", table_name="fires")
    op.drop_column("fires", "taken_from")
    op.drop_column("fires", "lease_expires")
