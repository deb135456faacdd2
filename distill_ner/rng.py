"""Seeded randomness that depends only on a seed and string keys, never on process state or call order."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_rng(seed: int, *keys: str) -> np.random.Generator:
    """A Generator that depends only on `seed` and `keys`, never on process state.

    Python's hash() of a str is salted per process, so the key is hashed with blake2b instead. The seed goes
    through the same string so that negative seeds are fine (SeedSequence wants non-negative entropy).
    """
    material = "\x1f".join([str(seed), *keys]).encode("utf-8")
    entropy = int.from_bytes(hashlib.blake2b(material, digest_size=16).digest(), "big")
    return np.random.default_rng(entropy)
