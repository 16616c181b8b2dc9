"""Library logging: structlog's API over stdlib ``logging`` (``gpo.*``), configuring nothing.

``get_logger(name)`` returns a structlog logger (``log.info("event", key=value)``, ``log.bind``)
with its own processor chain: structlog's global configuration is neither read nor changed. Each
event becomes one record of the stdlib logger ``name``: its message reads ``event key=value ...``
and its fields (with any bound context variables, such as ``run_id``) are the dict
``record.gpo_event``. Events below the logger's effective level are dropped before any work, so a
host that configured nothing sees what stdlib shows by default: WARNING and above on stderr, nothing
on stdout. The ``gpo`` command line attaches its handlers to the ``gpo`` logger
(:mod:`pipeline.cli._logs`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import structlog

EVENT_ATTR = "gpo_event"
"""The attribute of a ``gpo`` log record holding the event's fields as a dict."""


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger writing to the stdlib logger ``name`` (``gpo.*``)."""
    return structlog.stdlib.BoundLogger(logging.getLogger(name), list(PROCESSORS), context={})


def message(fields: Mapping[str, Any]) -> str:
    """An event as one line of text: ``event key=value ...``."""
    rest = (f"{key}={value!r}" for key, value in fields.items() if key != "event")
    return " ".join([str(fields.get("event", "")), *rest])


def _to_record(
    _: Any, __: str, event_dict: structlog.typing.EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of the stdlib logging call: the message, the fields, any exception."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("positional_args", None)
    fields = dict(event_dict)
    return (message(fields),), {"extra": {EVENT_ATTR: fields}, "exc_info": exc_info}


PROCESSORS: tuple[structlog.typing.Processor, ...] = (
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    _to_record,
)
