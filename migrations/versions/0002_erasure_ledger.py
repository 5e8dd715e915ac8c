"""erasure ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 09:52:29.440452
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "erasure_ledger",
        sa.Column("subject_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("erase_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subject_digest", name=op.f("pk_erasure_ledger")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:

    op.drop_table("erasure_ledger")
