"""``wallet keys create|list|revoke`` (API.md): the secret is printed once, alone on the last line."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from wallet.auth.issue import issue_key
from wallet.config import Settings
from wallet.persistence.api_key_store import ApiKeyRecord, ApiKeyStore
from wallet.persistence.migrations import migrate


def parser() -> argparse.ArgumentParser:
    keys = argparse.ArgumentParser(prog="wallet keys", description="API keys: issue, list, revoke")
    sub = keys.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="issue a key; its secret is printed once, on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. wallets:read,wallets:deposit")
    create.add_argument(
        "--wallets", nargs="*", default=[], metavar="PATTERN", help="ids, prefixes ending in *, or * (all)"
    )
    create.add_argument("--expires-in-days", type=float, default=None)
    sub.add_parser("list", help="every key (never its secret)")
    revoke = sub.add_parser("revoke", help="refused on every instance within a second")
    revoke.add_argument("key_id")
    return keys


def _describe(key: ApiKeyRecord) -> str:
    state = "revoked" if key.revoked_at else "active"
    expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
    created = key.created_at.isoformat(timespec="seconds") if key.created_at else "-"
    return (
        f"{key.id}  {state:7}  name={key.name!r}  scopes={','.join(key.scopes)}"
        f"  wallets={','.join(key.wallets) or '(none)'}  created={created}  expires={expires}"
    )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    await migrate(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        store = ApiKeyStore(conn)
        if args.action == "create":
            scopes = [s.strip() for s in args.scopes.split(",")]
            try:
                record, token = await issue_key(store, args.name, scopes, args.wallets, args.expires_in_days)
            except ValueError as exc:
                print(f"wallet keys: {exc}", file=sys.stderr)
                return 2
            print(f"created {_describe(record)}")
            print("the secret below is shown once; only its hash is stored:")
            print(token)
            return 0
        if args.action == "list":
            for key in await store.all():
                print(_describe(key))
            return 0
        if await store.revoke(args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"wallet keys: no key {args.key_id}", file=sys.stderr)
        return 1
    finally:
        await conn.close()


def main(argv: list[str], settings: Settings) -> int:
    return asyncio.run(_run(parser().parse_args(argv), settings))
