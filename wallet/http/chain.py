"""The request chain: ONE aiohttp middleware (``metrics.observe_middleware``) whose inner steps
(the rate limit when on, then error answers) are plain coroutine calls rather than middleware
layers, since aiohttp wraps each layer in a partial: a call more per request (DESIGN.md §8,
"Measurements")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A step of the chain: the request and the rest of the chain's handler, to the response.
Step = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


async def call_handler(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The last step: the route's handler itself."""
    return await handler(request)
