"""The application service: wires the pools, stores, writer, directory and gate, and runs commands."""

from wallet.service.wallet_service import WalletService

__all__ = ["WalletService"]
