"""Initial schema: one table per kind of stored object.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Self-contained on purpose (no import of tables.py): a migration describes the schema as it was
when written, whatever the ORM classes look like later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLES = ("files", "assistants", "threads", "messages", "runs", "run_steps", "sandbox_sessions")


def _create(name: str, *items: sa.schema.SchemaItem, indexes: Sequence[str] = ()) -> None:
    """A table with the common columns around `items`, and an index on project and `indexes`."""
    op.create_table(
        name,
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        *items,
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=f"pk_{name}"),
        sa.UniqueConstraint("id", name=f"uq_{name}_id"),
        sqlite_autoincrement=True,
    )
    for column in ("project", *indexes):
        op.create_index(f"ix_{name}_{column}", name, [column])


def upgrade() -> None:
    _create(
        "files",
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("blob", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("blob", name="uq_files_blob"),
    )
    _create("assistants")
    _create("threads")
    _create(
        "messages",
        sa.Column("thread_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        indexes=("thread_id", "run_id"),
    )
    _create(
        "runs",
        sa.Column("thread_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        indexes=("thread_id", "status"),
    )
    _create(
        "run_steps",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=False),
        indexes=("run_id",),
    )
    _create(
        "sandbox_sessions",
        sa.Column("owner_kind", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("price_usd", sa.Float(), nullable=False),
        sa.Column("memory_limit", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)  # drops its indexes too
