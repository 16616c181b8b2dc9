"""Logging for the command line: handlers on the stdlib ``gpo`` logger. Only ``gpo`` calls this.

Library modules log through :func:`pipeline._log.get_logger` to stdlib loggers under ``gpo`` and
configure nothing. :func:`configure` attaches one handler to ``gpo`` that writes ``level`` and above
to stderr (for a person, or as JSON lines); :func:`to_file` adds one that writes every INFO+ event,
with its bound context variables (``run_id``...), to a file as JSON lines while a block runs, and
takes it away after. structlog itself is configured too, so that a logger from
``structlog.get_logger("gpo.x")`` ends up in the same place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import orjson
import structlog

from pipeline import _log

ROOT = "gpo"
_CONSOLE = "gpo-console"
_FILE = "gpo-file"


def configure(
    *,
    json: bool = False,
    level: int = logging.WARNING,
    stream: TextIO | None = None,
    file: IO[bytes] | None = None,
) -> None:
    """Log events at ``level`` and above to ``stream`` (stderr), as JSON lines or for a person;
    with ``file``, every event at INFO and above is also written there as a JSON line.

    Replaces the handlers an earlier call attached; leaves any others alone."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if handler.get_name() in (_CONSOLE, _FILE):
            logger.removeHandler(handler)
    console = logging.StreamHandler(stream or sys.stderr)
    console.set_name(_CONSOLE)
    console.setLevel(level)
    console.setFormatter(_formatter(json=json))
    logger.addHandler(console)
    if file is not None:
        logger.addHandler(_JsonLines(file))
    logger.setLevel(min(level, logging.INFO) if file is not None else level)
    structlog.configure(
        processors=list(_log.PROCESSORS),
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


@contextmanager
def to_file(path: Path, *, json: bool, level: int = logging.WARNING) -> Iterator[None]:
    """Also write every INFO+ event to ``path`` (JSON lines) while the block runs; then the
    ``gpo`` logger is as it was (without a :func:`configure` before, ``json`` and ``level`` say
    what goes to stderr meanwhile)."""
    logger = logging.getLogger(ROOT)
    before, saved_level = list(logger.handlers), logger.level
    with path.open("ab", buffering=0) as file:  # nothing left to flush when closed on a full disk
        if not any(handler.get_name() == _CONSOLE for handler in before):
            configure(json=json, level=level)
        logger.addHandler(_JsonLines(file))
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        try:
            yield
        finally:
            for handler in list(logger.handlers):
                if handler not in before:
                    logger.removeHandler(handler)
            logger.setLevel(saved_level)


def _formatter(*, json: bool) -> logging.Formatter:
    renderer: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, _json_line]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _event_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def _event_fields(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """A ``gpo`` record's structured fields in place of its text message."""
    record: logging.LogRecord = event["_record"]
    event.update(record.__dict__.get(_log.EVENT_ATTR) or {})
    return event


def _json_line(_: Any, __: str, event: structlog.typing.EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


class _JsonLines(logging.Handler):
    """Every INFO+ record as one JSON object per line of a binary file, flushed at once. When
    the file cannot be written (a full disk), it says so once on stderr and files nothing more:
    logging never stops a run."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(logging.INFO)
        self.set_name(_FILE)
        self.setFormatter(_formatter(json=True))
        self._file = file
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        try:
            line = memoryview(self.format(record).encode() + b"\n")
            while line:
                line = line[self._file.write(line) :]
            self._file.flush()
        except OSError as exc:
            self._failed = True
            print(
                f"warning: log events are no longer written to {self._file.name}: {exc}",
                file=sys.stderr,
            )
        except Exception:  # stdlib's convention: report, never raise
            self.handleError(record)
