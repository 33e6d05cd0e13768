"""A lean path to Redis for the balance cache's two hot commands: one TCP connection that sends
``MGET`` (lookups) and ``EVALSHA`` (the guarded write-through), pipelined, its replies parsed by
hiredis (the parser redis-py itself uses when installed).

Why not redis-py's client for these: its connection pool, retry and observability layers cost
several times the CPU of this path per call (DESIGN.md §8). Everything else
(rate limits, health checks, deletions after an outage) uses redis-py.

Plain ``redis://`` URLs only (host, port, database, optional user and password); for others
(TLS, unix sockets) ``mget_reader`` returns redis-py's ``mget``. Any failure (refused, timeout,
an error reply, the connection lost) fails the pending calls and drops the connection; the next
call connects again. Replies are matched to calls in order, so a call that times out drops the
connection rather than leave a late reply to be taken for the next one's.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; redis-py works without it
    hiredis = None  # type: ignore[assignment]

Mget = Callable[[Sequence[str]], Awaitable[list[Any]]]
Close = Callable[[], Awaitable[None]]
Arg = bytes | str | int


@dataclass(frozen=True, slots=True)
class LuaScript:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> LuaScript:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


RunScript = Callable[[LuaScript, Sequence[str], Sequence[Arg]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LeanRedis:
    """The balance cache's view of Redis: lookups, guarded writes, and closing."""

    mget: Mget
    run_script: RunScript
    close: Close


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


class RedisReplyError(Exception):
    """Redis answered with an error."""


def encode_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        assert hiredis is not None
        self._reader = hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport; uvloop's is not a subclass of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if not self._waiters:  # nothing asked for it: the stream is out of step
                self.abort()
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RedisReplyError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = ConnectionError(f"redis connection lost: {exc!r}")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self.transport.write(command)
        return future

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LeanConnection:
    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._db = int(parts.path.strip("/") or 0)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout_seconds
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def mget(self, keys: Sequence[str]) -> list[Any]:
        reply: list[Any] = await self.execute(encode_command(b"MGET", *(k.encode() for k in keys)))
        return reply

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """``EVALSHA``; if Redis does not know the script yet (``NOSCRIPT``), ``EVAL`` (which also
        caches it in Redis)."""
        tail = [str(len(keys)).encode(), *(k.encode() for k in keys), *(_encode(a) for a in args)]
        try:
            return await self.execute(encode_command(b"EVALSHA", script.sha.encode(), *tail))
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute(encode_command(b"EVAL", script.source.encode(), *tail))

    async def execute(self, command: bytes) -> Any:
        """Send one encoded command; its reply (an error reply raises ``RedisReplyError``)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        try:
            async with asyncio.timeout(self._timeout):
                return await protocol.call(command)
        except RedisReplyError:
            raise  # the stream is still in step
        except BaseException:
            self._drop(protocol)
            raise

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and not protocol.lost:
                return protocol
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self._timeout):
                _, protocol = await loop.create_connection(_Protocol, self._host, self._port)
                try:
                    if self._password is not None:
                        auth = [b"AUTH", self._password.encode()]
                        if self._username is not None:
                            auth.insert(1, self._username.encode())
                        await protocol.call(encode_command(*auth))
                    if self._db:
                        await protocol.call(encode_command(b"SELECT", str(self._db).encode()))
                except BaseException:
                    protocol.abort()
                    raise
            self._protocol = protocol
            return protocol

    def _drop(self, protocol: _Protocol) -> None:
        protocol.abort()
        if self._protocol is protocol:
            self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None
        await asyncio.sleep(0)  # let the transport finish closing


def lean_redis(url: str, redis: Redis, *, timeout_seconds: float) -> LeanRedis:
    """The leanest client available for ``url``: a ``LeanConnection``, or redis-py for URLs it
    does not handle."""
    if hiredis is not None and urlsplit(url).scheme == "redis":
        connection = LeanConnection(url, timeout_seconds=timeout_seconds)
        return LeanRedis(connection.mget, connection.run_script, connection.close)
    scripts: dict[str, Any] = {}

    async def client_mget(keys: Sequence[str]) -> list[Any]:
        return await redis.mget(list(keys))

    async def client_run_script(script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        registered = scripts.get(script.sha)
        if registered is None:
            registered = scripts[script.sha] = redis.register_script(script.source)
        return await registered(keys=list(keys), args=list(args))

    async def nothing() -> None:
        return None

    return LeanRedis(client_mget, client_run_script, nothing)
