"""Configuration, read from the environment in this one place. README.md documents every name."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, get_origin, get_type_hints


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/wallet"
    database_replica_urls: tuple[str, ...] = ()
    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    host: str = "0.0.0.0"
    port: int = 3000
    rate_limit_enabled: bool = True
    # Rate limits per client (limits' notation: "100/minute"), shared through Redis.
    rate_limit_default: str = "100/minute"
    rate_limit_withdraw: str = "10/minute"
    rate_limit_strategy: str = "moving-window"
    # Take the client from X-Forwarded-For (only behind a trusted proxy, or in tests).
    rate_limit_trust_forwarded: bool = False
    # Authentication (API.md): on unless AUTH_ENABLED=false (logged as a warning at start-up).
    auth_enabled: bool = True
    # JWTs from an identity provider: issuer and audience required; keys from the JWKS URL, or
    # (development) the HS256 secret; only these algorithms are accepted.
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_jwks_url: str = ""
    auth_jwt_secret: str = ""
    auth_jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    # How often each instance asks PostgreSQL which cached API keys were revoked (< 1 s).
    auth_revocation_poll_seconds: float = 0.25
    # Failed authentications per address ("limits" notation), shared through Redis; then 429.
    auth_failure_rate_limit: str = "20/minute"
    # Redis balance cache: written through after commit; entries expire after this many seconds.
    balance_cache_enabled: bool = True
    balance_cache_ttl_seconds: int = 300
    redis_key_prefix: str = "wallet"
    redis_timeout_seconds: float = 0.5
    # Health: each check's timeout, and which checks make /health/ready answer 503 when down.
    health_timeout_seconds: float = 2.0
    health_required: tuple[str, ...] = ("database", "rabbitmq", "redis")
    # Logs: "json" (structured, one object a line) or "console".
    log_format: str = "json"
    log_level: str = "info"
    # The event loop of serve, relay and worker: "uvloop", or "asyncio" (wallet/event_loop.py).
    event_loop: str = "uvloop"
    default_currency: str = "USD"
    # Pool sizes: the flush writer and reads share the primary pool.
    db_pool_min: int = 2
    db_pool_max: int = 10
    # asyncpg's prepared statements per connection; 0 behind PgBouncer in transaction mode.
    db_statement_cache_size: int = 100
    # How many flush transactions may run at once; each gathers many wallets' batches. One
    # measured fastest: fewer, larger transactions share each one's fixed cost (DESIGN.md §8).
    # Two let one slow transaction not hold up every other wallet.
    writer_concurrency: int = 1
    # Most wallet batches gathered into one flush transaction.
    writer_max_wallets: int = 256
    # Batches of one wallet in flight at once (see DESIGN.md §9); 2 measured no faster here.
    flush_pipeline_depth: int = 1
    # Wallet actors: idle ones are stopped after this many seconds; at most this many live.
    actor_idle_seconds: float = 60.0
    max_live_actors: int = 20_000
    # How long an HTTP request waits for its command before answering 503.
    command_timeout_seconds: float = 10.0
    idempotency_ttl_seconds: int = 24 * 3600
    shutdown_timeout_seconds: float = 4.0
    # Slow clients: a connection that has not sent a request's headers this long after it opened
    # or after its last answer is closed (idle keep-alive too); a body still arriving is waited
    # for this long (408).
    http_idle_timeout_seconds: float = 15.0
    http_body_timeout_seconds: float = 10.0
    # /metrics: values that need a query (outbox, sagas, alerts) are refreshed in the background at
    # most this often, however many scrape; a scrape itself does no I/O.
    metrics_refresh_seconds: float = 15.0
    # Sagas unfinished and untouched this long are driven on by recovery.
    saga_stuck_threshold_seconds: float = 60.0
    # Event stream (docs/EVENTS.md): the topic exchange the outbox relay publishes to.
    rabbitmq_exchange: str = "wallet_events"
    # Outbox relay: off in an API instance when a separate ``wallet relay`` process publishes.
    outbox_relay_enabled: bool = True
    # Polling fallback to LISTEN/NOTIFY, rows per round, published rows kept this long.
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 500
    outbox_retention_seconds: float = 3600.0
    outbox_publish_timeout_seconds: float = 5.0
    outbox_backoff_initial_seconds: float = 0.1
    outbox_backoff_max_seconds: float = 30.0
    # Fraud worker: its queue (the DLQ is "<queue>.dlq"), prefetch, retries with growing delays.
    # It handles the messages in hand as one batch of at most ``fraud_batch_size``; a prefetch of
    # twice that lets the next batch arrive while one is being processed.
    fraud_queue: str = "fraud_detection"
    fraud_prefetch: int = 1000
    fraud_batch_size: int = 500
    fraud_max_retries: int = 3
    fraud_retry_base_seconds: float = 1.0
    # Rules: HIGH_VALUE_TRANSACTION above this amount (major units); RAPID_WITHDRAWALS when more
    # than ``fraud_rapid_count`` withdrawals fall within the window.
    fraud_high_value_threshold: Decimal = Decimal("10000")
    fraud_rapid_count: int = 3
    fraud_rapid_window_seconds: float = 300.0
    # Alerts of these rules are CRITICAL; with auto-freeze on, a critical alert freezes the wallet.
    fraud_critical_rules: tuple[str, ...] = ("RAPID_WITHDRAWALS",)
    fraud_auto_freeze: bool = False
    # The API's queue of critical alerts (the auto-freeze consumer).
    fraud_alert_queue: str = "fraud_auto_freeze"
    # Processed-event records and the rules' window are kept this long.
    fraud_state_retention_seconds: float = 7 * 24 * 3600.0
    # The worker's /health and /metrics port (0: none); /health answers 503 "lagging" when the
    # oldest event not yet processed is older than the threshold.
    fraud_worker_port: int = 0
    fraud_lag_threshold_seconds: float = 10.0
    # Whether DATABASE_URL, REDIS_URL, RABBITMQ_URL were set (non-empty); `wallet serve` runs an
    # embedded stand-in for each one that was not (wallet/embedded.py), kept under ``data_dir``.
    database_url_given: bool = True
    redis_url_given: bool = True
    rabbitmq_url_given: bool = True
    data_dir: str = ".data"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Each field from the variable of its name in capitals (``_NAMES`` lists the others),
        parsed by the field's type; unset or empty keeps the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, kind in get_type_hints(cls).items():
            if name in _DERIVED:
                continue
            text = env.get(_NAMES.get(name, name.upper()))
            if text:
                value = _parse(kind, text)
                values[name] = _NORMALISE[name](value) if name in _NORMALISE else value
        return cls(
            **values,
            database_url_given=bool(env.get("DATABASE_URL")),
            redis_url_given=bool(env.get("REDIS_URL")),
            rabbitmq_url_given=bool(env.get("RABBITMQ_URL")),
            extra={k: v for k, v in env.items() if k.startswith("WALLET_")},
        )


# Variables not named after their field in capitals.
_NAMES = {"saga_stuck_threshold_seconds": "SAGA_STUCK_THRESHOLD", "data_dir": "WALLET_DATA_DIR"}
# Fields that no variable of their own sets.
_DERIVED = frozenset({"database_url_given", "redis_url_given", "rabbitmq_url_given", "extra"})
# Applied to a value read from the environment (the defaults are already in this form).
_NORMALISE: dict[str, Callable[[Any], Any]] = {
    "log_format": str.lower,
    "log_level": str.lower,
    "event_loop": str.lower,
    "default_currency": str.upper,
    "health_required": lambda checks: tuple(c.lower() for c in checks),
    "fraud_critical_rules": lambda rules: tuple(r.upper() for r in rules),
    "flush_pipeline_depth": lambda depth: max(1, depth),
}


def variable_names() -> dict[str, str]:
    """Field name -> the environment variable that sets it (README.md's configuration table)."""
    return {name: _NAMES.get(name, name.upper()) for name in get_type_hints(Settings) if name not in _DERIVED}


def _parse(kind: Any, text: str) -> Any:
    """``text`` as a value of the field type ``kind``; a tuple is a comma-separated list."""
    if kind is bool:
        return _bool(text)
    if kind in (int, float, Decimal):
        return kind(text)
    if get_origin(kind) is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if kind is str:
        return text
    raise TypeError(f"no parser for settings of type {kind!r}")  # pragma: no cover
