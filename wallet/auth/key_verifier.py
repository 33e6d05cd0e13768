"""API key verification without a database round trip per request, revocation honoured within 1 s.

A key is read from PostgreSQL the first time it is seen and then cached (its secret's hash and
its principal). Every ``poll_seconds`` one query asks which of the cached keys are still usable
(not revoked, not expired, not deleted) and the others are dropped: one small query per instance
per poll, whatever the traffic. A cached key is trusted only while the last poll that succeeded
was *issued* less than ``fresh_seconds`` ago, so a revocation committed at T is refused on every
instance from T + 1 s at the latest; if polling fails (PostgreSQL unreachable) lookups go to the
database, which fails closed. Expiry is also checked on every request against the cached
``expires_at``. Unknown or unusable key ids are remembered for one poll period, so a flood of
made-up keys costs one query per id per period (failed attempts are rate limited by address too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from wallet.auth.principal import Principal, WalletPatterns
from wallet.auth.tokens import key_id_of, matches
from wallet.persistence.api_key_store import ApiKeyRecord, ApiKeyStore

log = logging.getLogger(__name__)


class Miss:
    """Not in the cache (or the cache may be stale): ask ``verify``."""


MISS: Final = Miss()


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: bytes
    principal: Principal


def principal_of(record: ApiKeyRecord) -> Principal:
    return Principal(
        "api_key",
        record.id,
        record.name,
        frozenset(record.scopes),
        WalletPatterns.parse(record.wallets),
        tag=f"k:{record.id}",
        expires_at=None if record.expires_at is None else record.expires_at.timestamp(),
    )


class ApiKeyVerifier:
    def __init__(
        self,
        store: ApiKeyStore,
        *,
        poll_seconds: float = 0.25,
        fresh_seconds: float = 1.0,
        max_entries: int = 10_000,
    ) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._fresh_seconds = fresh_seconds
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        # Tokens whose secret matched (the fast path: no parsing, no hashing); dropped with their key.
        self._tokens: dict[str, Principal] = {}
        self._unusable: dict[str, float] = {}  # key id -> monotonic time until which it is refused
        self._loading: dict[str, asyncio.Future[bool]] = {}
        self._last_poll_issued = -1e9
        self._task: asyncio.Task[None] | None = None

    # -- the request path --------------------------------------------------------------------

    def cached(self, token: str) -> Principal | Miss | None:
        """The principal of ``token`` from the cache alone (no I/O), None if refused, or MISS."""
        if time.monotonic() - self._last_poll_issued > self._fresh_seconds:
            return MISS
        principal = self._tokens.get(token)
        if principal is not None and (principal.expires_at is None or principal.expires_at > time.time()):
            return principal
        return self._from_entries(token)

    def _from_entries(self, token: str) -> Principal | Miss | None:
        """Check ``token`` against its key's cached hash (and remember it if it matches)."""
        key_id = key_id_of(token)
        if key_id is None:
            return None
        entry = self._entries.get(key_id)
        if entry is None:
            return MISS
        if not matches(token, entry.secret_hash):
            return None
        expires_at = entry.principal.expires_at
        if expires_at is not None and expires_at <= time.time():
            self._drop(key_id)
            return None
        if len(self._tokens) >= self._max_entries:
            self._tokens.pop(next(iter(self._tokens)))
        self._tokens[token] = entry.principal
        return entry.principal

    async def verify(self, token: str) -> Principal | None:
        """The principal of ``token``, or None (unknown, revoked, expired, wrong secret). Raises
        when PostgreSQL cannot be asked (the caller answers 503)."""
        found = self.cached(token)
        if not isinstance(found, Miss):
            return found
        key_id = key_id_of(token)
        if key_id is None:
            return None
        if self._unusable.get(key_id, 0.0) > time.monotonic():
            return None
        if not await self._load(key_id):
            return None
        found = self._from_entries(token)  # just read from the database: fresh whatever the poll
        return None if isinstance(found, Miss) else found

    def _drop(self, key_id: str) -> None:
        """Forget a key and every token of it."""
        if self._entries.pop(key_id, None) is not None:
            self._tokens = {t: p for t, p in self._tokens.items() if p.id != key_id}

    async def _load(self, key_id: str) -> bool:
        """Whether the key is usable, read once per key id however many requests wait for it. The
        read's own task caches the answer before it completes, so a request arriving between its
        end and its waiters' wake-up finds the entry instead of reading again."""
        loading = self._loading.get(key_id)
        if loading is None:
            loading = asyncio.ensure_future(self._read(key_id))
            self._loading[key_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key_id, None))
        return await asyncio.shield(loading)

    async def _read(self, key_id: str) -> bool:
        record = await self._store.find(key_id)
        if record is None or not record.usable_at(datetime.now(UTC)):
            self._remember_unusable(key_id)
            return False
        if len(self._entries) >= self._max_entries:
            self._drop(next(iter(self._entries)))
        self._entries[key_id] = _Entry(record.secret_hash, principal_of(record))
        return True

    def _remember_unusable(self, key_id: str) -> None:
        if len(self._unusable) >= self._max_entries:
            now = time.monotonic()
            self._unusable = {k: t for k, t in self._unusable.items() if t > now}
        if len(self._unusable) < self._max_entries:
            self._unusable[key_id] = time.monotonic() + self._poll_seconds
        self._drop(key_id)

    # -- revocation --------------------------------------------------------------------------

    async def poll_once(self) -> None:
        """Drop the cached keys that are no longer usable."""
        issued = time.monotonic()
        cached = list(self._entries)
        if cached:
            usable = await self._store.usable(cached)
            for key_id in cached:
                if key_id not in usable:
                    self._drop(key_id)
        self._last_poll_issued = issued

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.poll_once()
                if failing:
                    log.info("API key revocation check works again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("API key revocation check failed (keys are read from the database): %r", exc)
                failing = True
            await asyncio.sleep(self._poll_seconds)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll_forever(), name="api-key-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
