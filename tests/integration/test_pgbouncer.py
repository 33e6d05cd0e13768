"""Two instances through PgBouncer in transaction mode (Debian's pgbouncer, a private one on a free
port): correct with DB_STATEMENT_CACHE_SIZE=0, on fewer server connections than their pools."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.service_process import free_port
from tests.helpers import assert_projection_matches_events, balance_cents, post
from wallet.bootstrap import start_api
from wallet.persistence.migrations import migrate, migration_files, repeatable_files

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
SERVER_CONNECTIONS = 3  # PgBouncer's pool for the database: what PostgreSQL sees

pytestmark = pytest.mark.skipif(
    not os.path.exists(PGBOUNCER), reason="pgbouncer not installed (.ci/run installs it)"
)


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[str]:
    """A private PgBouncer in front of this run's database; yields the URL clients use."""
    target = urlsplit(database_url)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="wallet-pgbouncer-"))
    directory.chmod(0o777)  # PgBouncer refuses to run as root: it may run as nobody
    users = directory / "users.txt"
    users.write_text(f'"{target.username}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432} pool_size={SERVER_CONNECTIONS}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\npool_mode = transaction\n"
        "max_client_conn = 200\nignore_startup_parameters = extra_float_digits\n"
    )
    for path in (users, config):
        path.chmod(0o644)
    command = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "nobody", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
            assert process.poll() is None, process.stderr.read() if process.stderr else "pgbouncer exited"
            assert time.monotonic() < deadline, "pgbouncer did not come up"
            time.sleep(0.1)
        yield f"postgresql://{target.username}@127.0.0.1:{port}{target.path}"
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


async def test_two_instances_through_pgbouncer_transaction_mode(
    aiohttp_client, settings, db, wallet_id, pgbouncer
):
    settings = replace(
        settings,
        database_url=pgbouncer,
        db_statement_cache_size=0,
        outbox_relay_enabled=False,  # the relay LISTENs: it connects to PostgreSQL directly
    )
    a = await start_api(settings, name="bouncer-a", run_migrations=False)
    b = await start_api(settings, name="bouncer-b", run_migrations=False)
    try:
        client_a = await aiohttp_client(a.app)
        client_b = await aiohttp_client(b.app)
        target = f"{wallet_id}-to"
        await post(client_a, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1000})

        async def hammer(client, n, kind, body):
            return await asyncio.gather(
                *(
                    post(
                        client,
                        f"/v1/wallet/{wallet_id}/{kind}",
                        body,
                        **{"X-Request-ID": f"{kind}-{id(client)}-{k}"},
                    )
                    for k in range(n)
                )
            )

        results = await asyncio.gather(
            hammer(client_a, 150, "deposit", {"amount": 1}),
            hammer(client_b, 150, "deposit", {"amount": 1}),
            hammer(client_b, 100, "withdraw", {"amount": 1}),
            hammer(client_a, 50, "transfer", {"toWalletId": target, "amount": 2}),
        )
        statuses = Counter(status for batch in results for status, _ in batch)
        assert statuses == {200: 450}, statuses
        # A retry through the other instance replays, whatever server connection it gets.
        status, body = await post(
            client_b,
            f"/v1/wallet/{wallet_id}/transfer",
            {"toWalletId": target, "amount": 2},
            **{"X-Request-ID": f"transfer-{id(client_a)}-0"},
        )
        assert status == 200 and body["toWalletId"] == target
        assert await balance_cents(db, wallet_id) == (1000 + 300 - 100 - 100) * 100
        assert await balance_cents(db, target) == 100 * 100
        await assert_projection_matches_events(db, wallet_id)
        for client in (client_a, client_b):
            response = await client.get(f"/v1/wallet/{wallet_id}/history?limit=5")
            assert response.status == 200
        # Two pools of up to 8 connections each, on at most SERVER_CONNECTIONS server connections.
        servers = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'bouncer-%'"
        )
        assert 0 < servers <= SERVER_CONNECTIONS
    finally:
        await a.stop()
        await b.stop()


async def test_migrations_through_pgbouncer_leave_no_lock_behind(pgbouncer, db):
    # `wallet serve` migrates at start: through PgBouncer, concurrent starts must still apply each
    # file once, and no advisory lock may stay held on a pooled server connection.
    name = f"wallet_bouncer_{uuid.uuid4().hex[:10]}"
    await db.execute(f'CREATE DATABASE "{name}"')
    url = pgbouncer.rsplit("/", 1)[0] + f"/{name}"
    try:
        first, second = await asyncio.wait_for(asyncio.gather(migrate(url), migrate(url)), 30)
        assert sorted(first + second) == sorted(n for n, _ in [*migration_files(), *repeatable_files()])
        assert await asyncio.wait_for(migrate(url), 10) == []
        held = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = $1)",
            name,
        )
        assert held == 0
    finally:
        await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
