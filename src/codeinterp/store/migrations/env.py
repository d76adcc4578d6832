"""Alembic's entry point: run the migrations on the connection the store hands over.

`database.upgrade` passes its connection in `config.attributes["connection"]`. Without one (a
developer autogenerating a new migration), a synchronous engine is made from `sqlalchemy.url`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from codeinterp.store.tables import Base


def run(connection: Connection) -> None:
    # render_as_batch: SQLite can alter a table only by copying it; alembic's batch mode does that.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        run(given)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (a synchronous URL such as sqlite:///path)")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()


main()
