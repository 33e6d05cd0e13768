"""Configuration, read from the environment in this one place. README.md documents every name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


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
    default_currency: str = "USD"
    # Pool sizes: the flush writer and reads share the primary pool.
    db_pool_min: int = 2
    db_pool_max: int = 10
    # How many flush transactions may run at once; each gathers many wallets' batches. One
    # measured fastest (fewer, larger transactions): spread 1,611 vs 1,416 req/s with two,
    # transfers 875 vs 790/s. Two let one slow transaction not hold up every other wallet.
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
    fraud_queue: str = "fraud_detection"
    fraud_prefetch: int = 32
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
    # Whether DATABASE_URL, REDIS_URL, RABBITMQ_URL were set (non-empty); `wallet serve` runs an
    # embedded stand-in for each one that was not (wallet/embedded.py), kept under ``data_dir``.
    database_url_given: bool = True
    redis_url_given: bool = True
    rabbitmq_url_given: bool = True
    data_dir: str = ".data"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: str) -> str:
            return env.get(name, default) or default

        replicas = tuple(u.strip() for u in env.get("DATABASE_REPLICA_URLS", "").split(",") if u.strip())
        return cls(
            database_url=get("DATABASE_URL", defaults.database_url),
            database_replica_urls=replicas,
            redis_url=get("REDIS_URL", defaults.redis_url),
            rabbitmq_url=get("RABBITMQ_URL", defaults.rabbitmq_url),
            host=get("HOST", defaults.host),
            port=int(get("PORT", str(defaults.port))),
            rate_limit_enabled=_bool(get("RATE_LIMIT_ENABLED", "true")),
            rate_limit_default=get("RATE_LIMIT_DEFAULT", defaults.rate_limit_default),
            rate_limit_withdraw=get("RATE_LIMIT_WITHDRAW", defaults.rate_limit_withdraw),
            rate_limit_strategy=get("RATE_LIMIT_STRATEGY", defaults.rate_limit_strategy),
            rate_limit_trust_forwarded=_bool(get("RATE_LIMIT_TRUST_FORWARDED", "false")),
            balance_cache_enabled=_bool(get("BALANCE_CACHE_ENABLED", "true")),
            balance_cache_ttl_seconds=int(
                get("BALANCE_CACHE_TTL_SECONDS", str(defaults.balance_cache_ttl_seconds))
            ),
            redis_key_prefix=get("REDIS_KEY_PREFIX", defaults.redis_key_prefix),
            redis_timeout_seconds=float(get("REDIS_TIMEOUT_SECONDS", str(defaults.redis_timeout_seconds))),
            health_timeout_seconds=float(get("HEALTH_TIMEOUT_SECONDS", str(defaults.health_timeout_seconds))),
            health_required=tuple(
                c.strip().lower()
                for c in get("HEALTH_REQUIRED", ",".join(defaults.health_required)).split(",")
                if c.strip()
            ),
            log_format=get("LOG_FORMAT", defaults.log_format).lower(),
            log_level=get("LOG_LEVEL", defaults.log_level).lower(),
            default_currency=get("DEFAULT_CURRENCY", defaults.default_currency).upper(),
            db_pool_min=int(get("DB_POOL_MIN", str(defaults.db_pool_min))),
            db_pool_max=int(get("DB_POOL_MAX", str(defaults.db_pool_max))),
            writer_concurrency=int(get("WRITER_CONCURRENCY", str(defaults.writer_concurrency))),
            writer_max_wallets=int(get("WRITER_MAX_WALLETS", str(defaults.writer_max_wallets))),
            flush_pipeline_depth=max(1, int(get("FLUSH_PIPELINE_DEPTH", str(defaults.flush_pipeline_depth)))),
            actor_idle_seconds=float(get("ACTOR_IDLE_SECONDS", str(defaults.actor_idle_seconds))),
            max_live_actors=int(get("MAX_LIVE_ACTORS", str(defaults.max_live_actors))),
            command_timeout_seconds=float(
                get("COMMAND_TIMEOUT_SECONDS", str(defaults.command_timeout_seconds))
            ),
            idempotency_ttl_seconds=int(
                get("IDEMPOTENCY_TTL_SECONDS", str(defaults.idempotency_ttl_seconds))
            ),
            shutdown_timeout_seconds=float(
                get("SHUTDOWN_TIMEOUT_SECONDS", str(defaults.shutdown_timeout_seconds))
            ),
            saga_stuck_threshold_seconds=float(
                get("SAGA_STUCK_THRESHOLD", str(defaults.saga_stuck_threshold_seconds))
            ),
            rabbitmq_exchange=get("RABBITMQ_EXCHANGE", defaults.rabbitmq_exchange),
            outbox_relay_enabled=_bool(get("OUTBOX_RELAY_ENABLED", "true")),
            outbox_poll_seconds=float(get("OUTBOX_POLL_SECONDS", str(defaults.outbox_poll_seconds))),
            outbox_batch_size=int(get("OUTBOX_BATCH_SIZE", str(defaults.outbox_batch_size))),
            outbox_retention_seconds=float(
                get("OUTBOX_RETENTION_SECONDS", str(defaults.outbox_retention_seconds))
            ),
            outbox_publish_timeout_seconds=float(
                get("OUTBOX_PUBLISH_TIMEOUT_SECONDS", str(defaults.outbox_publish_timeout_seconds))
            ),
            outbox_backoff_initial_seconds=float(
                get("OUTBOX_BACKOFF_INITIAL_SECONDS", str(defaults.outbox_backoff_initial_seconds))
            ),
            outbox_backoff_max_seconds=float(
                get("OUTBOX_BACKOFF_MAX_SECONDS", str(defaults.outbox_backoff_max_seconds))
            ),
            fraud_queue=get("FRAUD_QUEUE", defaults.fraud_queue),
            fraud_prefetch=int(get("FRAUD_PREFETCH", str(defaults.fraud_prefetch))),
            fraud_max_retries=int(get("FRAUD_MAX_RETRIES", str(defaults.fraud_max_retries))),
            fraud_retry_base_seconds=float(
                get("FRAUD_RETRY_BASE_SECONDS", str(defaults.fraud_retry_base_seconds))
            ),
            fraud_high_value_threshold=Decimal(
                get("FRAUD_HIGH_VALUE_THRESHOLD", str(defaults.fraud_high_value_threshold))
            ),
            fraud_rapid_count=int(get("FRAUD_RAPID_COUNT", str(defaults.fraud_rapid_count))),
            fraud_rapid_window_seconds=float(
                get("FRAUD_RAPID_WINDOW_SECONDS", str(defaults.fraud_rapid_window_seconds))
            ),
            fraud_critical_rules=tuple(
                r.strip().upper()
                for r in get("FRAUD_CRITICAL_RULES", ",".join(defaults.fraud_critical_rules)).split(",")
                if r.strip()
            ),
            fraud_auto_freeze=_bool(get("FRAUD_AUTO_FREEZE", "false")),
            fraud_alert_queue=get("FRAUD_ALERT_QUEUE", defaults.fraud_alert_queue),
            fraud_state_retention_seconds=float(
                get("FRAUD_STATE_RETENTION_SECONDS", str(defaults.fraud_state_retention_seconds))
            ),
            database_url_given=bool(env.get("DATABASE_URL")),
            redis_url_given=bool(env.get("REDIS_URL")),
            rabbitmq_url_given=bool(env.get("RABBITMQ_URL")),
            data_dir=get("WALLET_DATA_DIR", defaults.data_dir),
            extra={k: v for k, v in env.items() if k.startswith("WALLET_")},
        )
