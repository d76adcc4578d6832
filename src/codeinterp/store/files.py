"""The file-row operations of the store, each a synchronous function run in one transaction.

Rows only: the bytes are in the blob directory (blobs.py), which store.py writes before inserting
a row and deletes after deleting one.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from codeinterp.errors import NotFound

from . import statements
from .paging import page
from .records import FileRecord, Page
from .tables import FileRow, table_of

FILES = table_of(FileRow)


def insert_file(connection: Connection, record: FileRecord, blob: str) -> None:
    values = {
        "id": record.id,
        "project": record.project,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "bytes": record.bytes,
        "blob": blob,
        "expires_at": record.expires_at,
        "body": record.body,
    }
    connection.execute(statements.insert_row(FILES), values)


def find_file(connection: Connection, project: str, file_id: str) -> tuple[FileRecord, str]:
    """The file's record and its blob name; NotFound if the project has no such file."""
    row = connection.execute(
        statements.find_file(FILES), {"project": project, "id": file_id}
    ).first()
    if row is None:
        raise NotFound(f"No file found with id '{file_id}'.")
    return statements.file_record(row), row.blob


def delete_file(connection: Connection, project: str, file_id: str) -> str:
    """Delete the file's row; return its blob name (for the caller to delete next)."""
    _, blob = find_file(connection, project, file_id)
    connection.execute(statements.delete_row(FILES), {"project": project, "id": file_id})
    return blob


def list_files(
    connection: Connection,
    project: str,
    purpose: str | None,
    after: str | None,
    limit: int,
    order: str,
) -> Page[FileRecord]:
    filters = {} if purpose is None else {"purpose": purpose}
    rows, has_more = page(
        connection, FILES, statements.file_columns(FILES), project, filters,
        after=after, before=None, limit=limit, order=order,
    )  # fmt: skip
    return Page([statements.file_record(row) for row in rows], has_more)


def all_blobs(connection: Connection) -> set[str]:
    """The blob name of every file of every project."""
    return set(connection.execute(select(FILES.c.blob)).scalars())
