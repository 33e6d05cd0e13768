"""The authentication step of the request chain (``wallet.http.chain``), and the route policy.

For each route (by method and pattern, without the ``/v1`` prefix) the policy names the scope it
needs and the path parameter naming the wallet it touches. The step, in order:
1. open routes (``/health/live``, ``/health/ready``, the API docs) go straight on;
2. an address over its failed-authentication limit gets 429 (a local check, no I/O);
3. no, malformed, unknown, revoked or expired credential: 401 ``UnauthorizedError`` with
   ``WWW-Authenticate: Bearer``, counted against the address;
4. valid but without the route's scope: 403 ``ForbiddenError``;
5. a wallet outside the principal's patterns: 404, the same answer as a wallet that does not exist
   (given by the rest of the chain in place of the route, so it is rate limited the same way);
6. otherwise the principal is this request's (``current_principal``; the rate limit counts per
   principal) and the chain goes on.
A route not in the policy needs the ``*`` scope (closed by default). A route that only some of its
results concern (a transfer, fraud alerts) checks the wallets itself with ``current_principal``.
"""

from __future__ import annotations

import functools
import time
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web
from limits import parse
from redis.asyncio import Redis

from wallet.auth import principal as scopes
from wallet.auth.authenticator import Authenticator
from wallet.auth.key_verifier import Miss
from wallet.auth.principal import ANONYMOUS, Principal
from wallet.config import Settings
from wallet.http.chain import Handler, Step
from wallet.http.errors import error_response
from wallet.http.rate_limit import PRINCIPAL, ClientRateLimiter, Rule
from wallet.http.schemas import WALLET_ID_PATTERN

OPEN_PATHS = frozenset({"/health/live", "/health/ready"})
DOCS_PREFIX = "/api"
# Addresses over their failure limit remembered here (Redis holds the counts, so forgetting one
# early only costs its next refusal a Redis round trip): bounded, whatever the number of addresses.
MAX_BLOCKED_ADDRESSES = 10_000
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wallet"'}
CHALLENGE_INVALID = {"WWW-Authenticate": 'Bearer realm="wallet", error="invalid_token"'}


@dataclass(frozen=True, slots=True)
class Policy:
    open: bool = False
    scope: str | None = scopes.ALL  # None: any authenticated principal (an unknown path: then 404)
    wallet_param: str | None = None


_OPEN = Policy(open=True)
_AUTHENTICATED = Policy(scope=None)
_CLOSED = Policy()
_ROUTES: dict[tuple[str, str], Policy] = {
    ("GET", "/wallet/{id}"): Policy(scope=scopes.WALLETS_READ, wallet_param="id"),
    ("GET", "/wallet/{id}/history"): Policy(scope=scopes.WALLETS_READ, wallet_param="id"),
    ("POST", "/wallet/{id}/deposit"): Policy(scope=scopes.WALLETS_DEPOSIT, wallet_param="id"),
    ("POST", "/wallet/{id}/withdraw"): Policy(scope=scopes.WALLETS_WITHDRAW, wallet_param="id"),
    ("POST", "/wallet/{id}/transfer"): Policy(scope=scopes.TRANSFERS_WRITE, wallet_param="id"),
    ("GET", "/transfers/{saga_id}"): Policy(scope=scopes.TRANSFERS_READ),
    ("POST", "/wallet/{id}/freeze"): Policy(scope=scopes.WALLETS_ADMIN, wallet_param="id"),
    ("POST", "/wallet/{id}/unfreeze"): Policy(scope=scopes.WALLETS_ADMIN, wallet_param="id"),
    ("POST", "/wallet/{id}/close"): Policy(scope=scopes.WALLETS_ADMIN, wallet_param="id"),
    ("PUT", "/wallet/{id}/limits"): Policy(scope=scopes.WALLETS_ADMIN, wallet_param="id"),
    ("GET", "/fraud/alerts"): Policy(scope=scopes.FRAUD_READ),
    ("GET", "/metrics"): Policy(scope=scopes.OPS_READ),
    ("GET", "/health"): Policy(scope=scopes.OPS_READ),
}


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/")


def policy_for(method: str, path: str | None) -> Policy:
    """The policy of a route pattern (None: no route matched)."""
    if path is None:
        return _AUTHENTICATED
    if is_open(path):
        return _OPEN
    method = "GET" if method == "HEAD" else method
    return _ROUTES.get((method, path.removeprefix("/v1")), _CLOSED)


# aiohttp runs each request in its own task; the request is kept beside the principal so a
# principal can never be taken for another request's.
_current: ContextVar[tuple[web.Request, Principal] | None] = ContextVar("wallet_principal", default=None)


def current_principal(request: web.Request) -> Principal:
    """Who made ``request``; ANONYMOUS when authentication is off."""
    current = _current.get()
    if current is not None and current[0] is request:
        return current[1]
    return ANONYMOUS


def not_found(request: web.Request, wallet_id: str) -> web.Response:
    """Exactly the answer for a wallet that does not exist (API.md: no enumeration)."""
    return error_response(request, 404, "WalletNotFoundError", f"wallet {wallet_id} not found")


async def _missing_wallet(request: web.Request) -> web.StreamResponse:
    """The handler of a request about a wallet outside the principal's patterns."""
    return not_found(request, request.match_info["id"])


def _refused(
    request: web.Request, status: int, name: str, message: str, headers: dict[str, str]
) -> web.Response:
    response = error_response(request, status, name, message)
    response.headers.update(headers)
    return response


class AuthStep:
    def __init__(self, authenticator: Authenticator, failures: ClientRateLimiter, failure_rule: Rule) -> None:
        self._authenticator = authenticator
        self._failures = failures
        self._failure_rules = (failure_rule,)
        self._blocked: dict[str, float] = {}  # address -> monotonic time until which it gets 429
        self._policies: dict[tuple[str, str | None], Policy] = {}

    def _policy(self, request: web.Request) -> Policy:
        resource = request.match_info.route.resource
        if resource is None and is_open(request.path):
            # No route took it (a method an open path does not serve, a page the docs lack): the
            # app's own 405 or 404, as on any open path; not a failed authentication.
            return _OPEN
        key = (request.method, None if resource is None else resource.canonical)
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = policy_for(*key)
        return policy

    async def __call__(self, request: web.Request, handler: Handler, then: Step) -> web.StreamResponse:
        policy = self._policy(request)
        if policy.open:
            return await then(request, handler)
        if self._blocked:  # some address is over its failure limit (finding the address costs µs)
            address = self._failures.client_of(request)
            blocked_until = self._blocked.get(address)
            if blocked_until is not None:
                wait = blocked_until - time.monotonic()
                if wait > 0:
                    return self._too_many(request, wait)
                del self._blocked[address]
        header = request.headers.get("Authorization", "")
        credential = header[7:].strip() if header[:7].lower() == "bearer " else ""
        principal: Principal | None = None
        if credential:
            cached = self._authenticator.cached(credential)
            if not isinstance(cached, Miss):
                principal = cached
            else:
                try:
                    principal = await self._authenticator.authenticate(credential)
                except Exception:
                    return error_response(
                        request, 503, "ServiceUnavailableError", "cannot check credentials now"
                    )
        if principal is None:
            return await self._unauthorised(request, self._failures.client_of(request), bool(credential))
        if policy.scope is not None and not principal.has(policy.scope):
            return error_response(
                request, 403, "ForbiddenError", f"this credential lacks the {policy.scope} scope"
            )
        if policy.wallet_param is not None:
            wallet_id = request.match_info.get(policy.wallet_param, "")
            # A malformed id is left to the route (400); it cannot name anyone's wallet.
            if WALLET_ID_PATTERN.fullmatch(wallet_id) and not principal.may_touch(wallet_id):
                # Through the rest of the chain, as a missing wallet would be: rate limited, and
                # with the same headers (their absence would tell the two apart).
                handler = _missing_wallet
        token = _current.set((request, principal))
        request[PRINCIPAL] = principal.tag
        try:
            return await then(request, handler)
        finally:
            _current.reset(token)

    async def _unauthorised(self, request: web.Request, address: str, presented: bool) -> web.Response:
        verdict = await self._failures.check(self._failure_rules, address)
        if not verdict.allowed:
            self._block(address, time.monotonic() + max(1, verdict.reset_seconds))
            return self._too_many(request, verdict.reset_seconds)
        if presented:
            message = "the credential is not valid (unknown, revoked, expired or malformed)"
            return _refused(request, 401, "UnauthorizedError", message, CHALLENGE_INVALID)
        message = "authentication required: Authorization: Bearer <API key or JWT>"
        return _refused(request, 401, "UnauthorizedError", message, CHALLENGE)

    def _block(self, address: str, until: float) -> None:
        """Remember ``address`` as blocked; when full, forget the expired, then the oldest."""
        if len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
            now = time.monotonic()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            while len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
                del self._blocked[next(iter(self._blocked))]
        self._blocked[address] = until

    @staticmethod
    def _too_many(request: web.Request, wait: float) -> web.Response:
        retry_after = str(max(1, round(wait)))
        message = f"too many failed authentications from this address; retry in {retry_after}s"
        return _refused(request, 429, "RateLimitExceededError", message, {"Retry-After": retry_after})


def authentication(settings: Settings, authenticator: Authenticator, redis: Redis, then: Step) -> Step:
    """The authentication step, running ``then`` (the rest of the chain) for admitted requests;
    failed attempts are counted per address through Redis."""
    limit = Rule("auth-failures", parse(settings.auth_failure_rate_limit))
    step = AuthStep(authenticator, ClientRateLimiter(settings, redis), limit)
    # A partial, not a coroutine around the step: each coroutine in the chain is re-entered every
    # time the request's innermost await resumes (DESIGN.md §8).
    return functools.partial(step, then=then)
