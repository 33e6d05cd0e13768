"""Settings.from_env: every field has its variable, documented in README.md, parsed by type."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from wallet.config import Settings, variable_names

README = Path(__file__).resolve().parents[2] / "README.md"


def variables() -> set[str]:
    return set(variable_names().values())


def test_every_variable_is_documented_in_the_readme_table_and_back():
    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    documented = {name for line in table for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    assert variables() - documented == set()
    assert documented - variables() == set()


def test_values_are_parsed_by_type_and_empty_means_default():
    settings = Settings.from_env(
        {
            "PORT": "8080",
            "REDIS_TIMEOUT_SECONDS": "0.25",
            "RATE_LIMIT_ENABLED": "off",
            "FRAUD_HIGH_VALUE_THRESHOLD": "99.99",
            "DATABASE_REPLICA_URLS": "postgresql://a/x, ,postgresql://b/x",
            "HEALTH_REQUIRED": "Database, REDIS",
            "DEFAULT_CURRENCY": "eur",
            "FLUSH_PIPELINE_DEPTH": "0",
            "SAGA_STUCK_THRESHOLD": "5",
            "LOG_LEVEL": "",
            "WALLET_FAULT_CRASH_AFTER_DEBIT": "1",
        }
    )
    assert settings.port == 8080 and settings.redis_timeout_seconds == 0.25
    assert settings.rate_limit_enabled is False
    assert settings.fraud_high_value_threshold == Decimal("99.99")
    assert settings.database_replica_urls == ("postgresql://a/x", "postgresql://b/x")
    assert settings.health_required == ("database", "redis")
    assert settings.default_currency == "EUR"
    assert settings.flush_pipeline_depth == 1  # at least one batch in flight
    assert settings.saga_stuck_threshold_seconds == 5.0
    assert settings.log_level == Settings().log_level
    assert settings.extra == {"WALLET_FAULT_CRASH_AFTER_DEBIT": "1"}
    assert (settings.database_url_given, settings.redis_url_given) == (False, False)
    assert Settings.from_env({}) == Settings(
        database_url_given=False, redis_url_given=False, rabbitmq_url_given=False
    )
