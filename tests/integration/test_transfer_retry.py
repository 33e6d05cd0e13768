"""A transfer whose debit could not be written is done by the client's retry (issue 11, item 10):
the retry with the same X-Request-ID gets the transfer's outcome, not 409 "in progress" until
stuck-saga recovery runs a minute later. The debit's flush writes the saga's row, so the failed
attempt left none: the retry starts the transfer, once."""

from __future__ import annotations

import uuid

from tests.helpers import balance_cents, post


async def test_a_retry_drives_on_a_transfer_whose_debit_write_failed(client, db):
    source, dest = f"tr-{uuid.uuid4().hex[:10]}", f"tr-{uuid.uuid4().hex[:10]}"
    assert (await post(client, f"/v1/wallet/{source}/deposit", {"amount": 100}))[0] == 200
    # The debit's write fails inside PostgreSQL (not a lost connection: nothing to retry at once).
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.wallet_id = '{source}' THEN RAISE EXCEPTION 'injected write failure'; END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        f"CREATE TRIGGER {trigger} BEFORE INSERT ON wallet_events FOR EACH ROW EXECUTE FUNCTION {trigger}()"
    )
    key = str(uuid.uuid4())
    try:
        status, body = await post(
            client,
            f"/v1/wallet/{source}/transfer",
            {"toWalletId": dest, "amount": 30},
            **{"X-Request-ID": key},
        )
        assert (status, body["message"]) == (503, "write failed; retry"), body
        assert "sagaId" not in body  # no saga to follow: none was written
    finally:
        await db.execute(f"DROP TRIGGER {trigger} ON wallet_events")
        await db.execute(f"DROP FUNCTION {trigger}()")
    assert await db.fetchval("SELECT count(*) FROM transfer_sagas WHERE request_key = $1", key) == 0
    assert await balance_cents(db, source) == 10000

    status, body = await post(
        client, f"/v1/wallet/{source}/transfer", {"toWalletId": dest, "amount": 30}, **{"X-Request-ID": key}
    )
    assert (status, body["state"]) == (200, "COMPLETED"), body
    assert (await balance_cents(db, source), await balance_cents(db, dest)) == (7000, 3000)
    status, again = await post(
        client, f"/v1/wallet/{source}/transfer", {"toWalletId": dest, "amount": 30}, **{"X-Request-ID": key}
    )
    assert (status, again["sagaId"]) == (200, body["sagaId"])  # replayed, not a second transfer
    assert await db.fetchval("SELECT count(*) FROM transfer_sagas WHERE from_wallet_id = $1", source) == 1
