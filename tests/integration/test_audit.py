"""`wallet verify` passes on a healthy database and fails when an event was altered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg

from tests.conftest import ADMIN_URL, _database_url
from tests.helpers import post
from wallet.persistence.migrations import migrate


def run_verify(dsn: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "wallet", "verify"], env=env, capture_output=True, text=True, timeout=60
    )


async def test_verify_passes_after_traffic_and_fails_after_tampering(aiohttp_client, settings):
    # A database of its own: tampering must not disturb the other tests' books.
    name = f"wallet_audit_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _database_url(name)
    try:
        await migrate(dsn)
        from dataclasses import replace

        from wallet.bootstrap import start_api

        api = await start_api(replace(settings, database_url=dsn), name="audit", run_migrations=False)
        try:
            client = await aiohttp_client(api.app)
            await post(client, "/v1/wallet/a/deposit", {"amount": 100})
            await post(client, "/v1/wallet/a/withdraw", {"amount": 30})
            await post(client, "/v1/wallet/a/transfer", {"toWalletId": "b", "amount": 20})
        finally:
            await api.stop()

        healthy = run_verify(dsn)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "OK" in healthy.stdout

        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("ALTER TABLE wallet_events DISABLE TRIGGER wallet_events_no_update")
                await conn.execute(
                    "UPDATE wallet_events SET amount = amount + 1 WHERE wallet_id = 'a' AND version = 2"
                )
                await conn.execute("ALTER TABLE wallet_events ENABLE TRIGGER wallet_events_no_update")
        finally:
            await conn.close()
        tampered = run_verify(dsn)
        assert tampered.returncode == 1
        assert "MISMATCH" in tampered.stdout
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
