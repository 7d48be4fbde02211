"""Alembic's environment for the run store: migrations run on the connection that
:class:`~marketarena.evaluation.saved_runs.store.RunStore` opens (``config.attributes
["connection"]``), inside the transaction it holds, never from an ini file or a URL here."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the run store's migrations run through RunStore (it opens and upgrades a store), "
        "not from the alembic command line"
    )
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
