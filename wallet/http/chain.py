"""The request chain: ONE aiohttp middleware (``metrics.observe_middleware``) whose inner steps
(the rate limit when on, then error answers) are plain coroutine calls rather than middleware
layers, each of which aiohttp wraps in a partial. Measured through ``Application._handle``: the
old two layers cost 15-18 µs a request over a bare app's 9 µs, one layer and a step 14 µs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A step of the chain: the request and the rest of the chain's handler, to the response.
Step = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


async def call_handler(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The last step: the route's handler itself."""
    return await handler(request)
