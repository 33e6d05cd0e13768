"""The HTTP server around the app: how connections are held, and what aiohttp itself answers.

- Slow clients: a connection that has not sent a complete request's headers within
  ``settings.http_idle_timeout_seconds`` of opening (or of its last answer) is closed: aiohttp's
  keep-alive timer covers a connection waiting for its next request, headers half sent included
  (its default is an hour). A body still arriving is bounded in ``wallet.http.validation``.
- Bodies are not decompressed (``auto_decompress=False``): a request with a Content-Encoding is
  refused (415) before it is read, so no decompression bomb is ever inflated.
- Requests aiohttp cannot parse (bad header bytes, line too long, ...) are answered with
  API.md's error body and a fixed message, never aiohttp's text that echoes the bad bytes.
- No software versions in the ``Server`` header.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from wallet.config import Settings
from wallet.http.errors import HTTP_NAMES
from wallet.ids import correlation_id
from wallet.service.replies import error_body

SERVER_NAME = "wallet"


def handler_options(settings: Settings) -> dict[str, Any]:
    """The connection handling of ``web.AppRunner``'s keyword arguments, from the settings."""
    return {
        "keepalive_timeout": settings.http_idle_timeout_seconds,
        "auto_decompress": False,
        "lingering_time": min(2.0, settings.http_body_timeout_seconds),
    }


class _QuietRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own: logs the error, refuses when an answer has begun; its text is dropped.
        super().handle_error(request, status, exc, None)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        name = HTTP_NAMES.get(status, "InternalServerError" if status >= 500 else "HttpError")
        request_id = correlation_id()
        body = error_body(status, name, phrase, "", request_id)
        response = web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers={"Server": SERVER_NAME, "X-Request-ID": request_id},
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class WalletAppRunner(web.AppRunner):
    """``web.AppRunner`` with the connection handling above (``wallet serve`` and the tests)."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, **(handler_options(settings) | kwargs))

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the app; the same server, quieter
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
