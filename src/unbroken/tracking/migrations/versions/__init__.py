"""Migration scripts (a package only so that wheels ship them; alembic skips this file)."""
