"""Embeddings: deterministic, unit-length, similar texts close and unrelated ones apart."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from pipeline.sim.embed import (
    DIMENSIONS,
    cosine,
    embed,
    embedding_inputs,
    embedding_payload,
    encode,
    parse_embedding_request,
)
from pipeline.sim.faults import InvalidRequest

BASE = "Let's think step by step."
CLOSE = "Let us think through it step by step, carefully."
FAR = "Return the fruit names sorted in alphabetical order."


def test_vectors_are_deterministic_and_unit_length() -> None:
    vector = embed(BASE)
    assert vector == embed(BASE)
    assert len(vector) == DIMENSIONS
    assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0)


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    close, far = cosine(embed(BASE), embed(CLOSE)), cosine(embed(BASE), embed(FAR))
    assert close > 0.5
    assert far < 0.25
    assert close > far + 0.3


def test_case_and_punctuation_do_not_matter() -> None:
    assert cosine(embed("Think step by step"), embed("think, step by step!")) == pytest.approx(1.0)


def test_text_without_words_is_the_zero_vector() -> None:
    assert embed("?!") == [0.0] * DIMENSIONS
    assert cosine(embed("?!"), embed(BASE)) == 0.0


def test_fewer_dimensions_on_request() -> None:
    assert len(embed(BASE, dimensions=8)) == 8


def test_base64_is_little_endian_float32() -> None:
    vector = [0.5, -0.25, 1.0]
    encoded = encode(vector, "base64")
    assert isinstance(encoded, str)
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == vector
    assert encode(vector, "float") == vector


def test_inputs_are_a_string_or_a_list_of_strings() -> None:
    assert embedding_inputs("a") == ("a",)
    assert embedding_inputs(["a", "b"]) == ("a", "b")


@pytest.mark.parametrize("value", [None, 5, [1, 2], [], [""], "", ["a", None]])
def test_bad_inputs_are_invalid(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        embedding_inputs(value)
    assert caught.value.param == "input"


def test_payload_matches_openai_shape() -> None:
    request = parse_embedding_request({"model": "m", "input": ["a b", "c"], "dimensions": 4})
    payload = embedding_payload(request)
    assert payload["object"] == "list"
    assert payload["model"] == "m"
    assert [item["index"] for item in payload["data"]] == [0, 1]
    assert all(len(item["embedding"]) == 4 for item in payload["data"])
    assert payload["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "a"}, "model"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "a", "dimensions": DIMENSIONS + 1}, "dimensions"),
        ({"model": "m", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_request_fields_are_named(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_embedding_request(body)
    assert caught.value.param == param
