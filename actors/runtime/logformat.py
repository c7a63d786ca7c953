"""The agent's log formats: readable text (the default) or one JSON object a line (``agent.log_format =
"json"``), for a log collector.

A JSON line holds ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``actor`` (the logger's name without its
``fleetlet.`` prefix), ``event`` (the message), and, when the record belongs to one, ``pass`` (the reconcile
pass) and ``etag`` (the target state); a traceback goes in ``exception``. A handler names them with
``extra={"pass": ..., "etag": ...}`` (through :func:`context`).
"""
from __future__ import annotations

import datetime
import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT = ("pass", "etag")


def context(pass_number: int | None = None, etag: str | None = None) -> dict:
    """The ``extra`` of a log call that belongs to a reconcile pass or a target state."""
    found = {"pass": pass_number, "etag": etag}
    return {key: value for key, value in found.items() if value is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "actor": record.name.removeprefix("fleetlet."),
            "event": record.getMessage(),
        }
        for key in _CONTEXT:
            if getattr(record, key, None) is not None:
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def formatter_config(log_format: str) -> dict:
    """The ``formatters`` entry of a logging dictConfig for ``agent.log_format``."""
    if log_format == "json":
        return {"()": "actors.runtime.logformat.JsonFormatter"}
    return {"format": TEXT_FORMAT}


def configure_process(level: str, log_format: str) -> None:
    """run.py's own process logs as the actors do."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
