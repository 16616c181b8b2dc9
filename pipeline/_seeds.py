"""Stable seeds derived from a seed and a place in the run (hashlib: unlike the built-in
``hash``, the same in every process)."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts``, e.g. (run seed, job, step, purpose)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:4], "big") & 0x7FFFFFFF
