"""``wallet keys create|list|revoke`` against the test database (API.md's CLI contract)."""

from __future__ import annotations

import asyncio

import asyncpg

from wallet.auth.tokens import key_id_of, secret_hash
from wallet.cli import main


def test_create_list_revoke(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    args = ["keys", "create", "--name", "cli test", "--scopes", "wallets:read,transfers:write"]
    assert main([*args, "--wallets", "tenant-a:*", "alice", "--expires-in-days", "30"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[-1]  # the secret, alone on the last line
    key_id = key_id_of(token)
    assert key_id is not None and token.startswith(f"wk_{key_id}_") and len(token) >= 59
    assert not any(token[16:] in line for line in out[:-1])

    async def stored() -> asyncpg.Record:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        finally:
            await conn.close()

    row = asyncio.run(stored())
    assert bytes(row["secret_hash"]) == secret_hash(token)  # only the hash is stored
    assert token[16:].encode() not in bytes(row["secret_hash"])
    assert list(row["scopes"]) == ["transfers:write", "wallets:read"] and row["expires_at"] is not None
    assert list(row["wallets"]) == ["alice", "tenant-a:*"]

    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "active" in listed and token[16:] not in listed

    assert main(["keys", "revoke", key_id]) == 0
    assert main(["keys", "list"]) == 0 and f"{key_id}  revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "000000000000"]) == 1
    assert main(["keys", "create", "--name", "x", "--scopes", "wallets:reed"]) == 2  # unknown scope
    assert main(["keys", "create", "--name", "x", "--scopes", "*", "--wallets", "bad id"]) == 2
    assert "unknown scopes" in capsys.readouterr().err
