"""purchases and pseudonyms

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 12:33:16.413546
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "analytics_tombstones",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_analytics_tombstones")),
    )
    op.create_table(
        "purchases",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("purchase_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_time", sa.DateTime(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(length=32), nullable=False),
        sa.Column("coupon", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("return_of_order_id", sa.String(length=128), nullable=False),
        sa.Column("record_time", sa.DateTime(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_purchases")),
        sa.UniqueConstraint("purchase_id", name=op.f("uq_purchases_purchase_id")),
        sa.UniqueConstraint("source", "order_id", name=op.f("uq_purchases_source")),
    )
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_purchases_pseudonym"), ["pseudonym"], unique=False)

    op.create_table(
        "active_pseudonyms",
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("domain", sa.String(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_active_pseudonyms_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "domain", name=op.f("pk_active_pseudonyms")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_active_pseudonyms_pseudonym")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "pseudonyms",
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("domain", sa.String(length=32), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_pseudonyms_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pseudonym", name=op.f("pk_pseudonyms")),
    )
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pseudonyms_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pseudonyms_customer_id"))

    op.drop_table("pseudonyms")
    op.drop_table("active_pseudonyms")
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purchases_pseudonym"))

    op.drop_table("purchases")
    op.drop_table("analytics_tombstones")
