"""0011: issue 13 §3 (rolling instruments): ``resolved_instruments``, the concrete contract each rolling
alias of a run resolved to (runner/journal/resolved.py). Additive: a new table only."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resolved_instruments",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("instrument_key", sa.String(length=120), nullable=False),
        sa.Column("instrument", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("underlying", sa.String(length=120), nullable=True),
        sa.Column("underlying_ltp", sa.String(length=40), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "alias"),
    )


def downgrade() -> None:
    op.drop_table("resolved_instruments")
