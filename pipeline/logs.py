"""structlog setup for the command line. The library never calls this; only ``gpo`` does."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import orjson
import structlog


def configure(
    *,
    json: bool = False,
    level: int = logging.WARNING,
    stream: TextIO | None = None,
    file: IO[bytes] | None = None,
) -> None:
    """Log events at ``level`` and above to ``stream`` (stderr), as JSON lines or for a person;
    with ``file``, every event at INFO and above is also written there as a JSON line."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if file is not None:
        processors += [_FileTee(file), _MinLevel(level)]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            min(level, logging.INFO) if file is not None else level
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


@contextmanager
def to_file(path: Path, *, json: bool, level: int = logging.WARNING) -> Iterator[None]:
    """Also write every INFO+ event to ``path`` (JSON lines) while the block runs."""
    with path.open("ab") as file:
        configure(json=json, level=level, file=file)
        try:
            yield
        finally:
            configure(json=json, level=level)


class _FileTee:
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        self._file.write(orjson.dumps(event, default=str, option=orjson.OPT_APPEND_NEWLINE))
        self._file.flush()
        return event


class _MinLevel:
    def __init__(self, level: int) -> None:
        self._level = level

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        name = str(event.get("level", "info")).upper()
        if logging.getLevelName(name) < self._level:
            raise structlog.DropEvent
        return event
