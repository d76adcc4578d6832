"""Storage: the server's objects in a SQL database (SQLite by default), file bytes in blobs.

    store = await Store.open(data_dir)        # creates the directory, migrates the schema
    record = await store.create_file(project, "data.csv", "assistants", chunks, max_bytes)
    ...
    await store.close()

`Store` (store.py) is the whole API; it returns the frozen records of records.py. Each call's body
is a synchronous function of a connection (objects.py, files.py, usage.py, recovery.py,
session_states.py, traces.py, over the prebuilt statements of statements.py), which backends.py
runs as one transaction: inline on the event loop for SQLite (fast), through the async engine
for other databases. The schema is in tables.py, its migrations in migrations/, the engines in
database.py, WAL checkpoints in checkpoints.py, the blob directory in blobs.py. This package is
a leaf: it imports nothing from api, services or agent, and raises only codeinterp.errors exceptions
(NotFound, Conflict, InvalidRequest, QuotaExceeded).
"""

from .records import (
    FileRecord,
    ObjectRecord,
    Page,
    SessionRecord,
    SessionStateRecord,
    TraceFilter,
    TraceRecord,
)
from .store import Store
from .tables import expired_container

__all__ = [
    "FileRecord",
    "ObjectRecord",
    "Page",
    "SessionRecord",
    "SessionStateRecord",
    "Store",
    "TraceFilter",
    "TraceRecord",
    "expired_container",
]
