"""Alembic migrations of the store's schema; applied by `Store.open` (see database.migrate).

To write the next migration, change tables.py, then autogenerate against a database at head:

    from alembic import command
    from codeinterp.store.database import alembic_config
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "sqlite:///path/to/codeinterp.db")
    command.revision(config, "what changed", autogenerate=True, rev_id="0002")

and review the script it writes to versions/.
"""
