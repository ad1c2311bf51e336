"""alembic's environment: migrate the connection that :mod:`unbroken.tracking.migrate` passes in
``config.attributes["connection"]``, inside that caller's transaction (never its own)."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():  # nothing: the caller's transaction is already open
    context.run_migrations()
