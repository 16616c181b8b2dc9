"""The simulator's embeddings: deterministic vectors standing in for a sentence-embedding model.

A vector is a signed feature hash of lower-cased word unigrams and character trigrams,
L2-normalised: texts that share words and spellings get a high cosine similarity, unrelated texts
one near zero. Also the ``/v1/embeddings`` request fields and response body.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.sim.faults import InvalidRequest, int_field, model_field
from pipeline.sim.tokens import count_tokens

DIMENSIONS = 256
"""Length of every vector (a request may ask for fewer with ``dimensions``)."""

MAX_INPUTS = 2048
"""Most inputs in one embeddings request, as OpenAI allows."""

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5


def embed(text: str, *, dimensions: int = DIMENSIONS) -> list[float]:
    """The unit vector of ``text`` (all zeros for a text without word characters)."""
    vector = [0.0] * dimensions
    for feature, weight in _features(text):
        index, sign = _bucket(feature, dimensions)
        vector[index] += sign * weight
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms > 0 else 0.0


def encode(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    """``vector`` as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


@dataclass(frozen=True, kw_only=True)
class EmbeddingRequest:
    """The honoured fields of an embeddings request."""

    model: str
    texts: tuple[str, ...]
    dimensions: int = DIMENSIONS
    encoding_format: str = "float"

    @property
    def tokens(self) -> int:
        """Input tokens, as billed in ``usage``."""
        return sum(count_tokens(text) for text in self.texts)


def parse_embedding_request(body: dict[str, Any]) -> EmbeddingRequest:
    """The honoured fields of an embeddings body; ``InvalidRequest`` names a bad one."""
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return EmbeddingRequest(
        model=model_field(body),
        texts=embedding_inputs(body.get("input")),
        dimensions=int_field(body, "dimensions", lo=1, hi=DIMENSIONS) or DIMENSIONS,
        encoding_format=fmt,
    )


def embedding_payload(request: EmbeddingRequest) -> dict[str, Any]:
    """The response body for ``request``."""
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(request, text)}
        for index, text in enumerate(request.texts)
    ]
    usage = {"prompt_tokens": request.tokens, "total_tokens": request.tokens}
    return {"object": "list", "data": data, "model": request.model, "usage": usage}


def embedding_inputs(value: object) -> tuple[str, ...]:
    """The texts of an ``input`` field: a non-empty string or a list of 1-2048 of them.

    Raises ``InvalidRequest`` saying what was wrong (token-id inputs are not supported).
    """
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InvalidRequest("'input' must be a string or a list of strings", "input")
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise InvalidRequest(f"'input' must hold 1 to {MAX_INPUTS} strings", "input")
    if any(not text for text in texts):
        raise InvalidRequest("'input' cannot contain an empty string", "input")
    return tuple(str(text) for text in texts)


def _vector(request: EmbeddingRequest, text: str) -> list[float] | str:
    return encode(embed(text, dimensions=request.dimensions), request.encoding_format)


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    features = [(f"w:{word}", _WORD_WEIGHT) for word in words]
    for word in words:
        padded = f" {word} "
        features.extend((f"c:{padded[i : i + 3]}", _TRIGRAM_WEIGHT) for i in range(len(word)))
    return features


def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return (number >> 1) % dimensions, 1.0 if number & 1 else -1.0
