"""0015: ``halt_passes.halt_since``, the kill switch change (``control.since``) a halt cancel pass answered,
so daemons sharing one journal can tell which accounts a halt has been cancelled on already (each member
cancels its own accounts and covers those of a member that dies).

Additive: a nullable column only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("halt_passes", sa.Column("halt_since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("halt_passes", "halt_since")
