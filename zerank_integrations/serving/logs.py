"""Log output for ``serve``: readable lines, or one JSON object per line for log collectors.

The per-request line (logger ``zerank_integrations.serving.access``) carries its fields in
``record.zerank``: request id, route, dialect, status, documents, tokens and the phase timings. Counts
only: no query or document text is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request's fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "zerank", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text", logger_name: str | None = None) -> None:
    """``text`` lines or ``json`` objects on stderr for ``logger_name`` (default: the root logger, for
    ``serve``), replacing its earlier handlers. A Ray replica configures only ``zerank_integrations``,
    leaving Ray's own loggers as Ray set them up."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    target = logging.getLogger(logger_name)
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level.upper())
    if logger_name is not None:
        target.propagate = False
