"""The ``hasfl-sec`` command line: one module per command, the options they share in
:mod:`.options`, and :mod:`.main`, which only wires the commands into one group."""

from .app import cli, main

__all__ = ["cli", "main"]
