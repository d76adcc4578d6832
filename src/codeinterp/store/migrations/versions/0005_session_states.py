"""Saved session states: the snapshot a sleeping (or crashed) session wakes from, one per owner.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "session_states",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("owner_kind", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("blob", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("saved_at", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_session_states"),
        sa.UniqueConstraint("id", name="uq_session_states_id"),
        sa.UniqueConstraint("blob", name="uq_session_states_blob"),
        sqlite_autoincrement=True,
    )
    for column in ("project", "session_id", "saved_at"):
        op.create_index(f"ix_session_states_{column}", "session_states", [column])


def downgrade() -> None:
    op.drop_table("session_states")
