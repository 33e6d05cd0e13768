"""Parsing event-stream bodies: exact amounts (Decimal, never float), malformed bodies refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.fraud.messages import (
    AlertMessage,
    MalformedMessageError,
    amount_to_cents,
    parse_alert,
    parse_wallet_event,
)

EVENT_ID = "3f1c7a9e-8a55-4b53-9b7e-2f4a3c1d0e11"


def body(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "eventId": EVENT_ID,
        "eventType": "FUNDS_WITHDRAWN",
        "walletId": "w-1",
        "amount": 10000.01,
        "currency": "USD",
        "version": 7,
        "metadata": {},
        "occurredAt": "2024-05-01T12:00:00.123456Z",
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_a_wallet_event_parses_with_exact_cents():
    event = parse_wallet_event(body())
    assert event.event_id == uuid.UUID(EVENT_ID)
    assert event.amount == 1_000_001
    assert event.version == 7
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    movement = event.movement()
    assert movement is not None and movement.amount == 1_000_001 and movement.currency == "USD"


def test_the_payload_the_database_writes_parses():
    # json_build_object's text as the outbox relay sends it (wallet_outbox_body): a numeric(20, 2)
    # amount, " : " between key and value, the metadata as jsonb prints it.
    raw = (
        b'{"eventId" : "' + EVENT_ID.encode() + b'", "eventType" : "FUNDS_WITHDRAWN", "walletId" : "w",'
        b' "amount" : 0.10, "currency" : "USD", "version" : 2, "metadata" : {"actor": {"type": "system"}},'
        b' "occurredAt" : "2024-05-01T12:00:00.000001Z"}'
    )
    assert parse_wallet_event(raw).amount == 10


def test_an_event_without_amount_moves_nothing():
    event = parse_wallet_event(body(eventType="WALLET_FROZEN", amount=None))
    assert event.amount is None and event.movement() is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        body(eventId="nope"),
        body(version=0),
        body(version="7"),
        body(amount=-1),
        body(amount=0.001),
        body(amount="NaN"),
        body(amount=True),
        body(occurredAt="yesterday"),
        body(walletId=""),
        body(metadata=[1]),
        b'{"amount": NaN}',
    ],
)
def test_malformed_bodies_are_refused(raw):
    with pytest.raises(MalformedMessageError):
        parse_wallet_event(raw)


@given(cents=st.integers(min_value=0, max_value=10**17))
def test_amounts_round_trip_exactly_through_json_decimals(cents):
    text = str(Decimal(cents) / 100)
    parsed = json.loads(f'{{"a": {text}}}', parse_float=Decimal)["a"]
    assert amount_to_cents(parsed) == cents


def test_an_alert_round_trips():
    alert = AlertMessage(
        alert_id=uuid.uuid4(),
        rule="RAPID_WITHDRAWALS",
        severity="CRITICAL",
        wallet_id="w-1",
        event_id=uuid.UUID(EVENT_ID),
        amount=1_000_001,
        currency="USD",
        reason="4 withdrawals within 300 s",
        occurred_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )
    assert json.loads(alert.to_json())["amount"] == 10000.01
    assert parse_alert(alert.to_json()) == alert
