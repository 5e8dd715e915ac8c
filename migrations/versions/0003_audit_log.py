"""audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:11:10.901448
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head_mac", sa.LargeBinary(length=32), nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=96), nullable=False),
        sa.Column("customer_ids", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("peer", sa.String(length=96), nullable=False),
        sa.Column("mac", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_outcome"), ["outcome"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_principal"), ["principal"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_time_us"), ["time_us"], unique=False)

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("mac", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_subjects",
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "seq", name=op.f("pk_audit_subjects")),
        sqlite_with_rowid=False,
    )

    # The genesis head: sequence 0 and an all-zero MAC; the first event chains from it.
    audit_head = sa.table(
        "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger), sa.column("mac", sa.LargeBinary)
    )
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "mac": bytes(32)}])


def downgrade() -> None:

    op.drop_table("audit_subjects")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_time_us"))
        batch_op.drop_index(batch_op.f("ix_audit_events_principal"))
        batch_op.drop_index(batch_op.f("ix_audit_events_outcome"))
        batch_op.drop_index(batch_op.f("ix_audit_events_action"))

    op.drop_table("audit_events")
    op.drop_table("audit_checkpoints")
