"""``python -m hyco``: the ``hyco`` command, for an install whose scripts directory is not on PATH."""

from hyco.cli import main

main(prog_name="hyco")
