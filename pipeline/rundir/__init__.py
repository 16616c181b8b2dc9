"""The run directory: everything a run leaves behind, and what makes it resumable.

Its layout and the lock that keeps it to one process (``_layout``), and the append-only journal
a resumed run is rebuilt from (``_journal``). The spend ledger and the response cache that live
in it are the gateway's (:mod:`pipeline.llm`).
"""

from pipeline.rundir._journal import Journal, open_journal, read_journal
from pipeline.rundir._layout import RunDir, RunLock, prepare
from pipeline.runner._state import JobHistory

__all__ = [
    "JobHistory",
    "Journal",
    "RunDir",
    "RunLock",
    "open_journal",
    "prepare",
    "read_journal",
]
