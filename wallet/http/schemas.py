"""marshmallow schemas: request validation here, and the OpenAPI document from the same classes."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from wallet.domain.money import AmountError, parse_amount

WALLET_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CURRENCY_PATTERN = r"^[A-Z]{3}$"


class Amount(fields.Field):
    """A JSON number or decimal string, > 0, at most 2 places; deserialises to integer cents."""

    def __init__(self, *, allow_zero: bool = False, **kwargs: Any) -> None:
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
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not WALLET_ID_PATTERN.fullmatch(text):
            raise ValidationError("wallet id must be 1-64 characters of [A-Za-z0-9_.:-]")
        return text


class _Strict(Schema):
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
    reason = fields.String(load_default="", validate=validate.Length(max=500))


class LimitsRequest(_Strict):
    dailyWithdrawalLimit = Amount(required=True, allow_none=True, allow_zero=True)


class BalanceResponse(Schema):
    walletId = fields.String()
    balance: fields.Field = fields.Decimal(as_string=False, places=2)


class WalletResponse(Schema):
    walletId = fields.String()
    balance: fields.Field = fields.Decimal(as_string=False, places=2)
    currency = fields.String()
    status = fields.String(validate=validate.OneOf(["ACTIVE", "FROZEN", "CLOSED"]))
    version = fields.Integer()
    dailyWithdrawalLimit: fields.Field = fields.Decimal(as_string=False, places=2, allow_none=True)


class HistoryItem(Schema):
    id = fields.String()
    eventType = fields.String()
    amount: fields.Field = fields.Decimal(as_string=False, places=2, allow_none=True)
    metadata = fields.Dict()
    createdAt = fields.String()


class ErrorResponse(Schema):
    statusCode = fields.Integer()
    error = fields.String()
    message = fields.String()
    timestamp = fields.String()
    path = fields.String()
    requestId = fields.String()
