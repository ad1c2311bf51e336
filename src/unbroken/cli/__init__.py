"""The `unbroken` command-line tool (click; rich for tables and progress)."""
