"""Deterministic per-sample randomness.

Every random choice for a sample derives from (global seed, sample index, purpose),
never from global RNG state, so a sample can be regenerated alone from its recipe
and results do not depend on processing order, batching or worker count.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(part) -> int:
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"seed parts must be non-negative, got {part}")
        return int(part)
    return zlib.crc32(str(part).encode("utf-8"))


def sample_seed(seed: int, index: int = 0, *purpose) -> int:
    """A 63-bit seed for sample ``index`` under global ``seed`` and a purpose tag."""
    ss = np.random.SeedSequence([_key(seed), _key(index), *(_key(p) for p in purpose)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def sample_rng(seed: int, index: int = 0, *purpose) -> np.random.Generator:
    """A numpy Generator for sample ``index`` (see :func:`sample_seed`)."""
    return np.random.default_rng(sample_seed(seed, index, *purpose))
