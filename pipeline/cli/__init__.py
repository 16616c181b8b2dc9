"""The ``gpo`` command line: commands, the live display, log setup, the demo.

The composition root for people at a terminal; the library never imports it.
"""

from pipeline.cli._main import main

__all__ = ["main"]
