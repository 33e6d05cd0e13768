"""Cheap unique ids. ``uuid.uuid4()`` reads the OS entropy source on every call, which showed in
the hot path's profile (DESIGN.md §8); these draw from a PRNG seeded once from it."""

from __future__ import annotations

import itertools
import os
import random
import uuid

_random = random.Random(os.urandom(32))
_VERSION_4 = 0x4000 << 64  # version nibble 4
_VARIANT = 0x8000 << 48  # RFC 4122 variant
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_prefix = f"{_random.getrandbits(48):012x}"
_counter = itertools.count(1)


def _reseed() -> None:
    """A forked child must not repeat its parent's sequence (the same event ids twice)."""
    global _prefix
    _random.seed(os.urandom(32))
    _prefix = f"{_random.getrandbits(48):012x}"


os.register_at_fork(after_in_child=_reseed)


def new_uuid() -> uuid.UUID:
    """A random (version 4) UUID: 122 random bits, unique for all practical purposes."""
    return uuid.UUID(int=(_random.getrandbits(128) & _CLEAR) | _VERSION_4 | _VARIANT)


def correlation_id() -> str:
    """A request id for requests that bring none: a per-process random prefix and a counter."""
    return f"{_prefix}-{next(_counter):x}"
