"""ApiKeyVerifier: one database read per key, however requests interleave with its end."""

from __future__ import annotations

import asyncio

from wallet.auth.key_verifier import ApiKeyVerifier
from wallet.auth.tokens import new_key_id, new_token, secret_hash
from wallet.persistence.api_key_store import ApiKeyRecord, ApiKeyStore


class _SlowStore:
    """``find`` waits for ``release``; counts its calls."""

    def __init__(self, record: ApiKeyRecord) -> None:
        self.record = record
        self.release = asyncio.Event()
        self.finds = 0

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        self.finds += 1
        await self.release.wait()
        return self.record if key_id == self.record.id else None

    async def usable(self, key_ids: list[str]) -> set[str]:
        return set(key_ids)


async def test_a_request_arriving_as_the_read_ends_finds_the_key_cached() -> None:
    key_id = new_key_id()
    token = new_token(key_id)
    store = _SlowStore(ApiKeyRecord(key_id, "k", secret_hash(token), ("wallets:read",), ("*",)))
    verifier = ApiKeyVerifier(store, poll_seconds=60)  # type: ignore[arg-type]
    await verifier.poll_once()  # the cache counts as fresh
    first = asyncio.create_task(verifier.verify(token))
    await asyncio.sleep(0)
    store.release.set()
    assert key_id in verifier._loading
    while key_id in verifier._loading:
        await asyncio.sleep(0)
    assert not first.done()  # the read has ended and is forgotten; its waiter has not resumed yet
    second = await verifier.verify(token)  # a request in that window
    assert (await first) is not None and second is not None
    assert store.finds == 1


def test_the_fake_store_has_the_real_ones_methods() -> None:
    assert {"find", "usable"} <= set(dir(ApiKeyStore))
