"""Similarity between prompts: cosine over embeddings, or an offline lexical fallback."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def lexical_vector(text: str) -> Counter[str]:
    """Word unigrams and bigrams of the case-folded text: no model, no network."""
    words = _WORD.findall(text.lower())
    grams = Counter(words)
    grams.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return grams


def lexical_similarity(a: str, b: str) -> float:
    va, vb = lexical_vector(a), lexical_vector(b)
    dot = sum(count * vb[gram] for gram, count in va.items())
    norm = math.sqrt(sum(c * c for c in va.values())) * math.sqrt(sum(c * c for c in vb.values()))
    return dot / norm if norm else 0.0
