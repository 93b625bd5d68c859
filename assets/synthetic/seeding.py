"""Stable random streams for the demo world.

Every random draw is keyed by the world seed plus a path of names (dataset, subject, sequence, ...), never
by Python's salted ``hash`` or by draw order across unrelated objects, so a dataset's content does not change
when another dataset is added, removed or generated alone.
"""

import hashlib

import numpy as np


def stable_hash(*keys) -> int:
    """64-bit integer from the keys' text, identical across processes and Python versions."""
    text = "\x1f".join(str(k) for k in keys)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def rng_for(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([int(seed), stable_hash(*keys)])
