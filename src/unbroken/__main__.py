"""`python -m unbroken ...` is the `unbroken` command."""

from .cli.main import main

main(prog_name="unbroken")
