"""The ``wallet`` command: serve, migrate, verify, worker, relay, keys, bench."""

from __future__ import annotations

import argparse
import asyncio
import sys

from wallet import event_loop
from wallet.config import Settings
from wallet.logging_setup import configure_logging


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="wallet", description="Actor-based wallet microservice")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP service (applies migrations first)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("verify", help="audit: replay every wallet's events and check the books")
    sub.add_parser("worker", help="run the fraud-detection worker (consumes the event stream)")
    sub.add_parser("relay", help="run the outbox relay alone (API instances: OUTBOX_RELAY_ENABLED=false)")
    sub.add_parser("keys", help="API keys: create, list, revoke (see wallet keys --help)", add_help=False)
    sub.add_parser("bench", help="run the benchmark (see wallet bench --help)", add_help=False)
    if argv[:1] == ["bench"]:
        from wallet.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["keys"]:
        from wallet.auth.cli import main as keys_main

        return keys_main(argv[1:], Settings.from_env())
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)  # structured JSON (structlog)
    if args.command in ("serve", "relay", "worker"):
        try:
            event_loop.loop_factory(settings.event_loop)  # an unknown or missing loop: say so now
        except ValueError as exc:
            print(f"wallet: {exc}", file=sys.stderr)
            return 2
    if args.command == "verify":
        from wallet.audit import verify

        report = asyncio.run(verify(settings.database_url))
        for line in report.lines():
            print(line)
        return 0 if report.ok else 1
    if args.command == "migrate":
        from wallet.persistence.migrations import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "relay":
        from wallet.server import run_relay

        event_loop.run(run_relay(settings), settings.event_loop)
        return 0
    if args.command == "worker":
        from wallet.server import run_worker

        event_loop.run(run_worker(settings), settings.event_loop)
        return 0
    if args.command == "serve":
        from wallet.embedded import EmbeddedUnavailableError
        from wallet.server import serve

        try:
            event_loop.run(serve(settings), settings.event_loop)
        except EmbeddedUnavailableError as exc:
            print(f"wallet serve: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
