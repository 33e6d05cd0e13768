"""The Redis balance cache: a wallet's view, written through after commit, guarded by version.

Each entry is ``<version>|<JSON view>`` under ``<prefix>:balance:<wallet id>``; the JSON is exactly
the body of ``GET /v1/wallet/{id}``, so a hit is answered without parsing or rendering anything.
One Lua script writes entries only when their version is newer than the stored one, so an older
write (a slow instance, a lagging replica read) never overwrites a newer one. Before a flush
transaction the writer turns its wallets' entries into *fences* (``F<version>|``: "a write of this
version may be committing"): a reader takes a fence for a miss, and only a view of that version or
newer replaces it. So an entry older than a committed write is never served, even when the
process that committed died before its cache write (DESIGN.md, "Reads").

Cheap on the hot path:
- Writes: the flush writer's ``after_commit`` hook only records the committed state; one task
  writes every state recorded meanwhile with ONE script call (group write, like group commit).
- Until that write lands, reads of those wallets are answered from the recorded states, so a
  read after a write on this instance sees it even though the reply went out before the write.
- Reads: concurrent lookups are gathered into one ``MGET`` (at most two in flight).
- Redis down: a circuit breaker skips Redis for a growing pause (reads go to PostgreSQL, writes
  are dropped and their entries fenced at the version written once Redis answers again, before
  reads here use Redis again; too many to remember: every cached view is deleted). Nothing ever
  fails a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from wallet.domain.money import to_json_number
from wallet.persistence.records import WalletBatch
from wallet.persistence.redis_lean import LuaScript, lean_redis

log = logging.getLogger(__name__)

# Entries: ``<version>|<view JSON>``, or a fence ``F<version>|`` (a write of that version may be
# committing; see ``fence``). KEYS: the wallets' keys. ARGV[1]: ttl in seconds; then, per key, its
# version and its value. A view lands over an older view, or over a fence it reaches (the write the
# fence announced, or a read made after it committed). Returns how many entries were written.
PUT_IF_NEWER = """
local ttl = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i])
  local current = redis.call('GET', key)
  local ok = true
  if current then
    local fence = tonumber(string.match(current, '^F(%d+)|'))
    if fence then
      ok = version >= fence
    else
      local stored = tonumber(string.match(current, '^(%d+)|'))
      ok = not stored or stored < version
    end
  end
  if ok then
    redis.call('SET', key, ARGV[2 * i + 1], 'EX', ttl)
    written = written + 1
  end
end
return written
"""

# KEYS: the wallets about to be written. ARGV[1]: ttl; then, per key, the version its write leads
# to. Each entry becomes a fence ``F<version>|`` unless it already holds that version or a newer
# one (view or fence): readers take a fence for a miss, and only a view of that version or newer
# replaces it.
FENCE = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[i + 1])
  local current = redis.call('GET', key)
  local held = current and tonumber(string.match(current, '^F?(%d+)|'))
  if not held or held < version then
    redis.call('SET', key, 'F' .. version .. '|', 'EX', ttl)
  end
end
return 1
"""

_PUT_IF_NEWER_SCRIPT = LuaScript.of(PUT_IF_NEWER)
_FENCE_SCRIPT = LuaScript.of(FENCE)

MAX_READS_IN_FLIGHT = 2
MAX_WRITE = 512  # views per script call (a backlog is written in rounds)
MAX_DIRTY = 100_000
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 5.0


class WalletLike(Protocol):
    """A wallet's current view: ``WalletState`` (after a commit) or ``WalletView`` (a DB read)."""

    @property
    def wallet_id(self) -> str: ...
    @property
    def balance(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def status(self) -> Any: ...
    @property
    def version(self) -> int: ...
    @property
    def daily_limit(self) -> int | None: ...


def view_json(state: WalletLike) -> bytes:
    """The wallet as the JSON body of ``GET /v1/wallet/{id}`` (compact, exact amounts)."""
    limit = state.daily_limit
    return orjson.dumps(
        {
            "walletId": state.wallet_id,
            "balance": to_json_number(state.balance),
            "currency": state.currency,
            "status": str(state.status),
            "version": state.version,
            "dailyWithdrawalLimit": None if limit is None else to_json_number(limit),
        }
    )


def create_redis(url: str, *, timeout_seconds: float, max_connections: int = 64) -> Redis:
    """A client that fails fast: short socket timeouts, no retries (the breaker decides)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)


class Breaker:
    """Skip a failing dependency for a pause that doubles while it keeps failing."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.open_until = 0.0
        self._pause = BACKOFF_INITIAL_SECONDS
        self.failures = 0

    def closed(self) -> bool:
        return self.open_until <= self._clock()

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.closed():
            log.warning("%s unavailable, skipping it for %.1fs: %r", self.name, self._pause, exc)
        self.open_until = self._clock() + self._pause
        self._pause = min(self._pause * 2, BACKOFF_MAX_SECONDS)

    def succeeded(self) -> None:
        self._pause = BACKOFF_INITIAL_SECONDS


class BalanceCache:
    def __init__(
        self,
        redis: Redis,
        loop: asyncio.AbstractEventLoop,
        *,
        prefix: str,
        ttl_seconds: int,
        url: str | None = None,
        timeout_seconds: float = 0.5,
    ) -> None:
        self._redis = redis
        # Lookups and guarded writes go through a lean pipelined connection when ``url`` allows it.
        self._lean = lean_redis(url or "", redis, timeout_seconds=timeout_seconds)
        self._loop = loop
        self._prefix = f"{prefix}:balance:"
        self._ttl = ttl_seconds
        self.breaker = Breaker("redis balance cache")
        # Committed here, not yet in Redis: served to reads until the write lands.
        self._pending: dict[str, WalletLike] = {}
        # Read from the database on a miss, to be cached (guarded like any write).
        self._fills: dict[str, WalletLike] = {}
        # Written (or being written) while Redis was out of reach, with the highest such version:
        # fenced at that version once Redis answers again (not deleted: a write sent before the
        # outage may still land after a deletion, while a fence refuses it). Until then, and
        # while that fencing is in flight, reads here skip Redis.
        self._dirty: dict[str, int] = {}
        self._clearing = False
        self._purge_all = False
        self._writing: asyncio.Task[None] | None = None
        self._read_waiters: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._reads_in_flight = 0
        self._closed = False
        self._closing = False
        self.hits = 0
        self.misses = 0
        self.read_batches = 0  # MGETs sent: lookups / this = keys per round trip

    def key(self, wallet_id: str) -> str:
        return self._prefix + wallet_id

    @property
    def idle(self) -> bool:
        """Nothing recorded is waiting to be written."""
        return self._writing is None and not (self._pending or self._fills)

    # -- writes ------------------------------------------------------------------------------

    async def fence(self, batches: Sequence[WalletBatch]) -> None:
        """The flush writer's hook before a transaction that may change these wallets: their
        entries become fences, so no process trusts a view older than what this transaction may
        commit, whatever happens to this process between COMMIT and its cache write (a SIGKILL,
        a lost connection). Redis unreachable: the wallets are remembered as dirty (this instance
        reads them from PostgreSQL, and deletes their entries once Redis answers again)."""
        keys: list[str] = []
        args: list[Any] = [self._ttl]
        for batch in batches:
            state = batch.state
            if state is not None and batch.events:
                keys.append(self._prefix + batch.wallet_id)
                args.append(state.version)
        if not keys or self._closed:
            return
        if self.breaker.closed():
            try:
                await self._lean.run_script(_FENCE_SCRIPT, keys, args)
                return
            except Exception as exc:
                self.breaker.failed(exc)
        self._mark_dirty(
            (key[len(self._prefix) :], version) for key, version in zip(keys, args[1:], strict=True)
        )
        self._schedule_write()

    def after_commit(self, batch: WalletBatch) -> None:
        """The flush writer's hook, on the loop, after ``batch`` committed: record, write later."""
        state = batch.state
        if state is None:
            return
        current = self._pending.get(state.wallet_id)
        if current is None or current.version < state.version:
            self._pending[state.wallet_id] = state
        self._schedule_write()

    def fill(self, view: WalletLike) -> None:
        """Cache a view read from the database (only lands if no newer version is cached)."""
        if self._closed or self._dirty or not self.breaker.closed():
            return
        current = self._fills.get(view.wallet_id)
        if current is None or current.version < view.version:
            self._fills[view.wallet_id] = view
        self._schedule_write()

    def _schedule_write(self) -> None:
        if self._writing is None and not self._closed:
            self._writing = self._loop.create_task(self._write_all())

    def _has_work(self) -> bool:
        return bool(self._pending or self._fills or self._dirty or self._purge_all)

    async def _write_all(self) -> None:
        try:
            while self._has_work() and not self._closed:
                if not self.breaker.closed():
                    if self._closing:
                        break  # Redis is out and we are stopping: the TTL will do
                    # Redis is out: what it holds for these wallets is stale; delete it later.
                    self._drop_pending()
                    await asyncio.sleep(max(0.0, self.breaker.open_until - time.monotonic()))
                    continue
                await self._write_once()
        finally:
            self._writing = None

    async def _write_once(self) -> None:
        """One round: deletions owed, then up to MAX_WRITE views in one script call."""
        states = list(itertools.islice(self._pending.values(), MAX_WRITE))
        fills: list[WalletLike] = []
        for wallet_id in list(itertools.islice(self._fills, MAX_WRITE - len(states))):
            view = self._fills.pop(wallet_id)
            if wallet_id not in self._pending:
                fills.append(view)
        dirty = list(self._dirty.items())
        self._dirty.clear()
        purge_all, self._purge_all = self._purge_all, False
        keys: list[str] = []
        args: list[Any] = [self._ttl]
        for state in (*states, *fills):
            keys.append(self._prefix + state.wallet_id)
            args.append(state.version)
            args.append(str(state.version).encode() + b"|" + view_json(state))
        self._clearing = bool(dirty or purge_all)
        try:
            if purge_all:
                await self._delete_everything()
            if dirty:
                fence_keys = [self._prefix + wallet_id for wallet_id, _ in dirty]
                fence_args: list[Any] = [self._ttl, *(version for _, version in dirty)]
                await self._lean.run_script(_FENCE_SCRIPT, fence_keys, fence_args)
            if keys:
                await self._lean.run_script(_PUT_IF_NEWER_SCRIPT, keys, args)
        except Exception as exc:
            self.breaker.failed(exc)
            self._purge_all = self._purge_all or purge_all
            self._mark_dirty(dirty)
            self._mark_dirty((s.wallet_id, s.version) for s in states)
            self._forget(states)
            return
        finally:
            self._clearing = False
        self.breaker.succeeded()
        self._forget(states)

    async def _delete_everything(self) -> None:
        """Too many wallets changed while Redis was out to remember: drop every cached view."""
        chunk: list[Any] = []
        async for key in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            chunk.append(key)
            if len(chunk) >= 1000:
                await self._redis.delete(*chunk)
                chunk = []
        if chunk:
            await self._redis.delete(*chunk)

    def _forget(self, states: Iterable[WalletLike]) -> None:
        pending = self._pending
        for state in states:
            if pending.get(state.wallet_id) is state:
                del pending[state.wallet_id]

    def _drop_pending(self) -> None:
        self._mark_dirty((s.wallet_id, s.version) for s in self._pending.values())
        self._pending.clear()
        self._fills.clear()

    def _mark_dirty(self, versions: Iterable[tuple[str, int]]) -> None:
        dirty = self._dirty
        for wallet_id, version in versions:
            if len(dirty) >= MAX_DIRTY:
                self._purge_all = True
                dirty.clear()
                return
            if dirty.get(wallet_id, -1) < version:
                dirty[wallet_id] = version

    # -- reads -------------------------------------------------------------------------------

    def fresh(self, wallet_id: str) -> bytes | None:
        """The view of a wallet committed here whose cache write has not landed yet."""
        if not self._pending:
            return None
        state = self._pending.get(wallet_id)
        if state is None:
            return None
        self.hits += 1
        return view_json(state)

    def get(self, wallet_id: str) -> asyncio.Future[bytes | None]:
        """The cached view's JSON, or None (a miss, or Redis unavailable), as a future: a plain
        call, not a coroutine, so a read's await chain is one frame shorter (DESIGN.md §8)."""
        future: asyncio.Future[bytes | None] = self._loop.create_future()
        if self._dirty or self._clearing or self._purge_all or self._closed or not self.breaker.closed():
            self.misses += 1  # Redis out, or it may hold views older than the database
            future.set_result(None)
            return future
        waiters = self._read_waiters.get(wallet_id)
        if waiters is None:
            self._read_waiters[wallet_id] = [future]
        else:
            waiters.append(future)
        if self._reads_in_flight < MAX_READS_IN_FLIGHT and len(self._read_waiters) == 1 and waiters is None:
            self._reads_in_flight += 1
            self._loop.create_task(self._read_batch())
        return future

    async def _read_batch(self) -> None:
        """Answer every lookup queued so far with one MGET; go on while more are queued."""
        try:
            while self._read_waiters:
                batch = self._read_waiters
                self._read_waiters = {}
                wallet_ids = list(batch)
                self.read_batches += 1
                try:
                    values = await self._lean.mget([self._prefix + w for w in wallet_ids])
                except Exception as exc:
                    self.breaker.failed(exc)
                    values = [None] * len(wallet_ids)
                for wallet_id, value in zip(wallet_ids, values, strict=True):
                    body: bytes | None = None
                    if isinstance(value, bytes) and not value.startswith(b"F"):  # a fence: a miss
                        body = value[value.index(b"|") + 1 :]
                        self.hits += 1
                    else:
                        self.misses += 1
                    for future in batch[wallet_id]:
                        if not future.done():
                            future.set_result(body)
        finally:
            self._reads_in_flight -= 1

    # -- life --------------------------------------------------------------------------------

    async def close(self, grace_seconds: float = 2.0) -> None:
        """Write what is recorded (briefly, unless Redis is out), then stop taking work."""
        self._closing = True
        task = self._writing
        if task is not None:
            if not self.breaker.closed():
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_seconds)
            except BaseException:
                task.cancel()
        self._closed = True
        for waiters in self._read_waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        self._read_waiters.clear()
        await self._lean.close()
