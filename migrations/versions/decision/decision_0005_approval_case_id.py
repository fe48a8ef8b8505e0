"""approval case_id (the case an approver named)

Revision ID: decision_0005
Revises: decision_0004
Create Date: 2026-12-04 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "decision_0005"
down_revision: str | None = "decision_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.add_column(sa.Column("case_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.drop_column("case_id")
