"""marshmallow schemas: request validation here, and the OpenAPI document from the same classes."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from wallet.domain.money import AmountError, parse_amount

WALLET_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CURRENCY_PATTERN = r"^[A-Z]{3}$"
SAGA_ID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_HISTORY_OFFSET = 2**31 - 1  # the document's int32


class Amount(fields.Field):
    """A JSON number or decimal string, > 0, at most 2 places; deserialises to integer cents."""

    def __init__(self, *, allow_zero: bool = False, **kwargs: Any) -> None:
        # For the OpenAPI document: a number (a decimal string is accepted too).
        kwargs["metadata"] = {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": not allow_zero,
            "maximum": 1_000_000_000_000,
            "multipleOf": 0.01,
            "description": "A JSON number or decimal string, at most 2 decimal places",
            **kwargs.get("metadata", {}),
        }
        super().__init__(**kwargs)
        self.allow_zero = allow_zero

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_amount(value, allow_zero=self.allow_zero)
        except AmountError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class WalletId(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {"pattern": f"^{WALLET_ID_PATTERN.pattern}$", **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not WALLET_ID_PATTERN.fullmatch(text):
            raise ValidationError("wallet id must be 1-64 characters of [A-Za-z0-9_.:-]")
        return text


def _no_nul(text: str) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it here, not in the flush."""
    if "\x00" in text:
        raise ValidationError("must not contain the character U+0000")


class _Strict(Schema):
    """A request body: unknown fields are refused (additionalProperties: false in the document)."""

    class Meta:
        unknown = RAISE


class DepositRequest(_Strict):
    amount = Amount(required=True, metadata={"description": "Positive, at most 2 decimal places"})
    currency = fields.String(
        validate=validate.Regexp(CURRENCY_PATTERN),
        metadata={"description": "Must match the wallet's; sets it for a new wallet"},
    )


class WithdrawRequest(_Strict):
    amount = Amount(required=True)


class TransferRequest(_Strict):
    toWalletId = WalletId(required=True)
    amount = Amount(required=True)


class LifecycleRequest(_Strict):
    reason = fields.String(
        load_default="",
        validate=[validate.Length(max=500), _no_nul],
        metadata={"pattern": "^[^\\u0000]*$"},  # the document says what _no_nul refuses
    )


class LimitsRequest(_Strict):
    dailyWithdrawalLimit = Amount(required=True, allow_none=True, allow_zero=True)


class BalanceResponse(Schema):
    walletId = fields.String(required=True)
    balance: fields.Field = fields.Decimal(as_string=False, places=2, required=True)


class WalletResponse(Schema):
    walletId = fields.String(required=True)
    balance: fields.Field = fields.Decimal(as_string=False, places=2, required=True)
    currency = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["ACTIVE", "FROZEN", "CLOSED"]))
    version = fields.Integer(required=True)
    dailyWithdrawalLimit: fields.Field = fields.Decimal(
        as_string=False, places=2, allow_none=True, required=True
    )


class HistoryItem(Schema):
    id = fields.String(required=True)
    eventType = fields.String(required=True)
    amount: fields.Field = fields.Decimal(as_string=False, places=2, allow_none=True, required=True)
    metadata = fields.Dict(required=True)
    createdAt = fields.String(required=True)


class ErrorResponse(Schema):
    statusCode = fields.Integer(required=True)
    error = fields.String(required=True, metadata={"description": "Stable machine name of the error"})
    message = fields.String(required=True)
    timestamp = fields.String(required=True)
    path = fields.String(required=True)
    requestId = fields.String(required=True)


# -- for the OpenAPI document only (the handlers validate these themselves) -----------------------


class WalletPath(Schema):
    id = fields.String(
        required=True,
        validate=[validate.Length(1, 64), validate.Regexp(f"^{WALLET_ID_PATTERN.pattern}$")],
        metadata={"description": "Wallet id: 1-64 characters of [A-Za-z0-9_.:-]"},
    )


class SagaPath(Schema):
    saga_id = fields.UUID(
        required=True,
        metadata={"description": "The transfer's saga id", "pattern": f"^{SAGA_ID_PATTERN.pattern}$"},
    )


class HistoryQuery(Schema):
    limit = fields.Integer(validate=validate.Range(1, 1000), metadata={"default": 100})
    offset = fields.Integer(validate=validate.Range(0, MAX_HISTORY_OFFSET), metadata={"default": 0})


class TransferResponse(Schema):
    sagaId = fields.String(required=True)
    state = fields.String(
        required=True, validate=validate.OneOf(["PENDING", "DEBITED", "COMPLETED", "COMPENSATED", "FAILED"])
    )
    fromWalletId = fields.String(required=True)
    toWalletId = fields.String(required=True)
    amount: fields.Field = fields.Decimal(as_string=False, places=2, required=True)


class TransferRecordResponse(TransferResponse):
    currency = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    createdAt = fields.String(allow_none=True)
    updatedAt = fields.String(allow_none=True)


class AlertsQuery(Schema):
    walletId = fields.String(validate=validate.Regexp(f"^{WALLET_ID_PATTERN.pattern}$"))
    limit = fields.Integer(validate=validate.Range(1, 1000), metadata={"default": 100})


class FraudAlertResponse(Schema):
    id = fields.String(required=True)
    walletId = fields.String(required=True)
    rule = fields.String(required=True)
    severity = fields.String(required=True, validate=validate.OneOf(["LOW", "MEDIUM", "HIGH", "CRITICAL"]))
    eventId = fields.String(required=True)
    amount: fields.Field = fields.Decimal(as_string=False, places=2, allow_none=True, required=True)
    currency = fields.String(allow_none=True, required=True)
    reason = fields.String(required=True)
    details = fields.Dict(required=True)
    occurredAt = fields.String(required=True)
    createdAt = fields.String(required=True)


class HealthCheck(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["up", "down"]))
    responseTime = fields.Integer(metadata={"description": "Milliseconds"})
    message = fields.String()
    outboxLagSeconds = fields.Float()


class HealthResponse(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "error"]))
    info = fields.Dict(keys=fields.String(), values=fields.Nested(HealthCheck))
    error = fields.Dict(keys=fields.String(), values=fields.Nested(HealthCheck))
    details = fields.Dict(keys=fields.String(), values=fields.Nested(HealthCheck))
