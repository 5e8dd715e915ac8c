"""client certificates for mTLS

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_certificates",
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("cert_id", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("revoke_time", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_client_certificates")),
        sa.UniqueConstraint("cert_id", name=op.f("uq_client_certificates_cert_id")),
    )


def downgrade() -> None:
    op.drop_table("client_certificates")
