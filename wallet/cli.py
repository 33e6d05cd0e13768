"""The ``wallet`` command: serve, migrate, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from wallet.config import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="wallet", description="Actor-based wallet microservice")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP service (applies migrations first)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("bench", help="run the benchmark (see wallet bench --help)", add_help=False)
    if argv[:1] == ["bench"]:
        from wallet.bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    _configure_logging(settings.log_level)
    if args.command == "migrate":
        from wallet.persistence.migrations import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "serve":
        from wallet.server import serve

        asyncio.run(serve(settings))
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
