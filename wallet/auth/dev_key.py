"""The newcomer path (``make run``): on the first start of the embedded mode, a development key
with every scope is issued, printed once and kept in ``$WALLET_DATA_DIR/dev-key`` (mode 0600).

Only when the database is the embedded one (no ``DATABASE_URL``): a production database never
gets a key it did not ask for. The secret goes to the terminal (stdout), never to the logs.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from wallet.auth.issue import issue_key
from wallet.persistence.api_key_store import ApiKeyStore

FILE_NAME = "dev-key"
NAME = "development key (make run)"


async def ensure_dev_key(pool: asyncpg.Pool, data_dir: Path) -> Path | None:
    """Issue the development key if the database has no key at all; return its file, if any."""
    path = data_dir / FILE_NAME
    store = ApiKeyStore(pool)
    if await store.any_exists():
        if path.exists():
            print(f"API key: export WALLET_KEY=$(cat {path})", flush=True)
            return path
        return None
    _, token = await issue_key(store, NAME, ["*"], ["*"])
    _keep(path, token)
    print(
        "\nA development API key with every scope was created (shown once; also in"
        f" {path}):\n\n    export WALLET_KEY={token}\n\n"
        'then: curl -H "Authorization: Bearer $WALLET_KEY" ...\n',
        flush=True,
    )
    return path


def _keep(path: Path, token: str) -> None:
    """Write the token readable by its owner only (a few bytes, once: not worth a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
