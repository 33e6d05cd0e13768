"""Structured logs: one JSON object a line (structlog), carrying the request id of the request
being served.

Every ``logging.getLogger(...)`` call in the code base goes through the same renderer, so there is
one format. The request id costs nothing per request: the HTTP middleware only puts the request
in a context variable; the id is looked up (or generated, then echoed in the reply) when a line is
actually written. No line is written per request at INFO: the access log is at DEBUG on the
``wallet.access`` logger.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp import web

from wallet.http.context import request_context

ACCESS_LOGGER = "wallet.access"

CURRENT_REQUEST: contextvars.ContextVar[web.Request | None] = contextvars.ContextVar(
    "wallet_current_request", default=None
)


def add_request(logger: Any, method_name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the request id (the client's X-Request-ID or the generated
    correlation id, the same one the reply echoes), method and path of the current request."""
    request = CURRENT_REQUEST.get()
    if request is not None and "request_id" not in event:
        ctx = request_context(request)
        event["request_id"] = ctx.request_id
        event.setdefault("method", request.method)
        event.setdefault("path", ctx.path)
    return event


# Credentials a line could carry (aiohttp quotes a malformed header line whole in its error; a
# client may paste a key where an id belongs): the rest of an Authorization line, what follows
# "Bearer", an API key's secret part (its key id is kept: it says which key was sent), a JWT.
_CREDENTIAL = re.compile(
    r"(?i:(authorization\s*:\s*)[^'\"\r\n]*)"
    r"|(?i:(bearer\s+)[^\s'\"]+)"
    r"|(wk_[0-9a-f]{12}_)[A-Za-z0-9_-]+"
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
REDACTED = "[REDACTED]"


def _redact_match(found: re.Match[str]) -> str:
    return (found.group(1) or found.group(2) or found.group(3) or "") + REDACTED


def redact_credentials(
    logger: Any, method_name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor, last before rendering (after the traceback is text): no credential
    reaches a log line, whoever wrote it."""
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = _CREDENTIAL.sub(_redact_match, value)
    return event


def _processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Route stdlib logging and structlog through one renderer (JSON unless ``fmt="console"``)."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    shared = _processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_credentials,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # aiohttp's own access log stays off; ours is DEBUG on ACCESS_LOGGER.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def access_log_enabled() -> bool:
    return logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.DEBUG)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
