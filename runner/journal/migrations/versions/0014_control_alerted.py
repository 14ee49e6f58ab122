"""0014: ``control.alerted_by``, who published the alert for the kill switch's latest change, so one change
pages once across `runner halt --alerts` and every daemon watching the row.

Additive: a nullable column only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("control", sa.Column("alerted_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("control", "alerted_by")
