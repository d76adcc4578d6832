"""A saved session state may have no archive: a session that had not changed since it was made
is saved as a row alone, and wakes as a new session.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite alters a column by copying the table: the copy keeps AUTOINCREMENT (seqs never reused)
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("session_states", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        batch.alter_column("blob", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # the old schema cannot hold a state without an archive: those go (their containers expire
    # at the next start, as they did before)
    op.execute("DELETE FROM session_states WHERE blob IS NULL")
    with op.batch_alter_table("session_states", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        batch.alter_column("blob", existing_type=sa.Text(), nullable=False)
