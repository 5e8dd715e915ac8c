"""consent ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 12:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_records",
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("given_by", sa.String(length=16), nullable=False),
        sa.Column("notice_version", sa.String(length=64), nullable=False),
        sa.Column("notice_sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("evidence_ct", sa.LargeBinary(), nullable=True),
        sa.Column("record_time", sa.DateTime(), nullable=False),
        sa.Column("request_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("request_digest", sa.LargeBinary(length=32), nullable=True),
        sa.PrimaryKeyConstraint("customer_id", "revision", name=op.f("pk_consent_records")),
        sa.UniqueConstraint("record_id", name=op.f("uq_consent_records_record_id")),
        sa.UniqueConstraint("request_key", name=op.f("uq_consent_records_request_key")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "consent_state",
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("given_by", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_consent_state_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "purpose", "scope", name=op.f("pk_consent_state")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("consent_state")
    op.drop_table("consent_records")
