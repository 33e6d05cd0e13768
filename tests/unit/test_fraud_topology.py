"""The fraud worker's queue topology: names, bindings, growing retry delays (no broker needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wallet.config import Settings
from wallet.messaging.topology import RetryPolicy, alert_topology, event_routing_key, fraud_topology


def test_the_fraud_queue_is_bound_to_withdrawals_and_transfer_debits():
    topology = fraud_topology(Settings())
    assert topology.exchange == "wallet_events"
    assert topology.queue == "fraud_detection"
    assert topology.dead_letter_queue == "fraud_detection.dlq"
    assert set(topology.routing_keys) == {"wallet.funds_withdrawn", "wallet.transfer_debited"}
    assert event_routing_key("FUNDS_WITHDRAWN") == "wallet.funds_withdrawn"


def test_retries_wait_longer_each_time_and_each_delay_has_its_own_queue():
    topology = fraud_topology(replace(Settings(), fraud_max_retries=3, fraud_retry_base_seconds=1.0))
    assert [topology.retry.delay_ms(n) for n in (1, 2, 3)] == [1000, 2000, 4000]
    assert topology.queue_names() == [
        "fraud_detection",
        "fraud_detection.dlq",
        "fraud_detection.retry.1000ms",
        "fraud_detection.retry.2000ms",
        "fraud_detection.retry.4000ms",
    ]


def test_names_are_configurable():
    settings = replace(Settings(), rabbitmq_exchange="ex", fraud_queue="fq", fraud_alert_queue="aq")
    assert fraud_topology(settings).exchange == "ex"
    assert alert_topology(settings).queue == "aq"
    assert alert_topology(settings).routing_keys == ("fraud.alert.critical",)


def test_a_nonsensical_retry_policy_is_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1, base_delay_seconds=1)
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=1, base_delay_seconds=0)


def test_settings_read_the_event_stream_environment():
    s = Settings.from_env(
        {
            "RABBITMQ_EXCHANGE": "x",
            "FRAUD_QUEUE": "q",
            "OUTBOX_POLL_SECONDS": "0.5",
            "OUTBOX_RETENTION_SECONDS": "60",
            "OUTBOX_RELAY_ENABLED": "false",
            "FRAUD_HIGH_VALUE_THRESHOLD": "2500.75",
            "FRAUD_RAPID_COUNT": "5",
            "FRAUD_RAPID_WINDOW_SECONDS": "120",
            "FRAUD_AUTO_FREEZE": "true",
            "FRAUD_MAX_RETRIES": "4",
            "FRAUD_CRITICAL_RULES": "rapid_withdrawals, high_value_transaction",
        }
    )
    assert (s.rabbitmq_exchange, s.fraud_queue, s.outbox_poll_seconds, s.outbox_retention_seconds) == (
        "x",
        "q",
        0.5,
        60.0,
    )
    assert not s.outbox_relay_enabled
    assert str(s.fraud_high_value_threshold) == "2500.75"
    assert (s.fraud_rapid_count, s.fraud_rapid_window_seconds, s.fraud_auto_freeze, s.fraud_max_retries) == (
        5,
        120.0,
        True,
        4,
    )
    assert s.fraud_critical_rules == ("RAPID_WITHDRAWALS", "HIGH_VALUE_TRANSACTION")
