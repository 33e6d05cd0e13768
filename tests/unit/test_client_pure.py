"""The client's pure parts: amounts, backoff, Retry-After, error classes; and that it stands alone."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from wallet.client import (
    BadGatewayError,
    InsufficientFundsError,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
    WalletError,
    WalletNotFoundError,
)
from wallet.client.errors import error_from_answer
from wallet.client.models import amount_json, to_amount
from wallet.client.retry import is_retryable, retry_after_seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("10.50"), Decimal("10.50")),
        (7, Decimal(7)),
        (" 0.01 ", Decimal("0.01")),
        ("1e2", Decimal(100)),
    ],
)
def test_amounts_in_are_decimal_ints_and_decimal_strings(value, expected):
    assert to_amount(value) == expected


def test_a_float_amount_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match=r"floats are inexact: pass Decimal\('0.1'\)"):
        to_amount(0.1)
    with pytest.raises(TypeError, match="not bool"):
        to_amount(True)


@pytest.mark.parametrize("value", ["ten", "NaN", "Infinity", ""])
def test_a_string_that_is_not_a_finite_number_is_refused(value):
    with pytest.raises(ValueError):
        to_amount(value)


def test_amounts_go_out_as_exact_decimal_strings():
    assert amount_json(Decimal("1E+2")) == "100"
    assert amount_json(Decimal("100.10")) == "100.10"


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    policy = RetryPolicy(initial=0.1, cap=1.0)
    assert [policy.backoff(n, rand=lambda: 1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.backoff(3, rand=lambda: 0.5) == 0.2
    assert policy.backoff(3, rand=lambda: 0.0) == 0.0


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (503, "ServiceUnavailableError", True),
        (502, None, True),
        (504, None, True),
        (429, "RateLimitExceededError", True),
        (409, "IdempotencyKeyInFlightError", True),
        (409, "SagaStepObsoleteError", True),
        (400, "ValidationError", False),
        (401, "UnauthorizedError", False),
        (403, "ForbiddenError", False),
        (404, "WalletNotFoundError", False),
        (422, "InsufficientFundsError", False),
        (500, "InternalServerError", False),
    ],
)
def test_which_answers_are_retried(status, error, retryable):
    assert is_retryable(status, error) is retryable


def test_an_error_answer_becomes_the_class_of_its_name_with_status_message_and_request_id():
    body = {
        "statusCode": 422,
        "error": "InsufficientFundsError",
        "message": "balance 1 < 2",
        "requestId": "k",
    }
    error = error_from_answer(422, body, request_id="k", replayed=True)
    assert type(error) is InsufficientFundsError
    assert (error.status, error.error, error.message, error.request_id, error.replayed) == (
        422,
        "InsufficientFundsError",
        "balance 1 < 2",
        "k",
        True,
    )
    assert (
        type(error_from_answer(404, {"error": "WalletNotFoundError"}, request_id="k")) is WalletNotFoundError
    )
    assert type(error_from_answer(401, {"error": "UnauthorizedError"}, request_id="k")) is UnauthorizedError


def test_an_unknown_name_or_a_proxy_page_falls_back_to_a_class_by_status():
    assert type(error_from_answer(400, {"error": "SomethingNewError"}, request_id="k")) is ValidationError
    proxy = error_from_answer(502, None, request_id="k", fallback="<html>bad gateway</html>")
    assert type(proxy) is BadGatewayError and proxy.message == "<html>bad gateway</html>"
    assert type(error_from_answer(599, None, request_id="k")) is ServerError
    assert issubclass(ServiceUnavailableError, WalletError)


def test_the_client_imports_nothing_of_the_server():
    code = "import sys, wallet.client; print(sorted(m for m in sys.modules if m.startswith('wallet')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    assert all(m == "wallet" or m.startswith("wallet.client") for m in loaded), loaded
