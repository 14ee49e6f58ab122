"""0012: issue 14/15 (run view): ``order_changes``, each order's price history (journal/order_changes.py).

Additive: a new table only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("chase_step", sa.Integer(), nullable=True),
        sa.Column("order_type", sa.String(length=8), nullable=True),
        sa.Column("price", sa.String(length=40), nullable=True),
        sa.Column("trigger_price", sa.String(length=40), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_order_changes_run_id", "order_changes", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_order_changes_run_id", table_name="order_changes")
    op.drop_table("order_changes")
