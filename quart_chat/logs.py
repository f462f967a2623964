"""Log lines: text for people (the default), one JSON object per line for log shippers.

``CHAT_LOG_FORMAT=json`` gives ``{"time", "level", "logger", "event", ...fields}``, the fields
being what a call passes as ``extra`` (room, close code, reason, client address...). Nothing
here ever logs a message text, a token or a password: callers pass only such fields.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(log_format: str) -> None:
    """Give the ``quart_chat`` loggers a handler in ``log_format`` (text or json), unless the
    host application already did; Hypercorn configures only its own loggers."""
    logger = logging.getLogger("quart_chat")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def redact(url: str) -> str:
    """A Redis URL with its password hidden, fit for logs: in the userinfo (which may hold
    any character, '/' and '@' included) and in a ``password=`` query parameter."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    # The query starts at the first "?name=" (a password may hold '?', '@' and '/').
    m = re.search(r"\?[A-Za-z_]+=", rest)
    rest, query = (rest[:m.start()], rest[m.start() + 1:]) if m else (rest, None)
    at = rest.rfind("@")
    if at != -1:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}@{rest[at + 1:]}"
    if query is not None:
        rest += "?" + "&".join("password=***" if p.lower().startswith("password=") else p for p in query.split("&"))
    return f"{scheme}://{rest}"
