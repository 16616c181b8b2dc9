"""The exit codes of ``gpo`` (``gpo --help`` and the README list them)."""

from __future__ import annotations

EXIT_OK = 0
"""Every job finished."""
EXIT_ERROR = 1
"""A job failed, or another error."""
EXIT_BAD_INPUT = 2
"""Bad configuration or data: nothing was spent."""
EXIT_BUDGET = 3
"""Stopped by a budget cap (best-so-far saved)."""
EXIT_STORAGE = 4
"""A storage fault: the run directory could not be written (resumable once fixed)."""
EXIT_INTERRUPTED = 130
"""Interrupted by SIGINT or SIGTERM (resumable)."""
EXIT_BROKEN_PIPE = 141
"""Standard output was closed by its reader (``gpo estimate ... | head``): 128 + SIGPIPE."""
