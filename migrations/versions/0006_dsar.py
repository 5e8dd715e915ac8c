"""data-subject requests, restriction and legal hold

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 12:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dsar_requests",
        sa.Column("request_id", sa.String(length=24), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_by", sa.String(length=64), nullable=False),
        sa.Column("open_time", sa.DateTime(), nullable=False),
        sa.Column("due_date", sa.String(length=10), nullable=False),
        sa.Column("verified_by", sa.String(length=64), nullable=True),
        sa.Column("verify_time", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("close_time", sa.DateTime(), nullable=True),
        sa.Column("rejection_reason", sa.String(length=32), nullable=True),
        sa.Column("rejection_text_ct", sa.LargeBinary(), nullable=True),
        sa.Column("receipt_id", sa.String(length=24), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_dsar_requests")),
    )
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dsar_requests_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dsar_requests_due_date"), ["due_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_dsar_requests_status"), ["status"], unique=False)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restricted", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("legal_hold")
        batch_op.drop_column("restricted")
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dsar_requests_status"))
        batch_op.drop_index(batch_op.f("ix_dsar_requests_due_date"))
        batch_op.drop_index(batch_op.f("ix_dsar_requests_customer_id"))
    op.drop_table("dsar_requests")
