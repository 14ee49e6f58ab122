"""0010: the ``parallel`` group a step ran in (``steps.parallel_group``), so ``runner show`` can nest a
group's members under it.

Additive: a nullable column only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("steps", sa.Column("parallel_group", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("steps", "parallel_group")
