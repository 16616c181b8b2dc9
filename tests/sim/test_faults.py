"""Fault specs, fault draws, latency draws and the shared request-field checks."""

from __future__ import annotations

import random
import statistics

import orjson
import pytest

from pipeline.sim.faults import (
    ERROR_KINDS,
    FaultInjector,
    FaultSpec,
    InvalidRequest,
    Latency,
    int_field,
    messages_field,
    number_field,
    quota_reply,
    stop_field,
)

FULL = "429=0.05,500=0.03,503=0.02,reset=0.01,truncate=0.01,fewer_choices=0.05,no_usage=0.02,quota"


def test_parse_reads_every_kind() -> None:
    spec = FaultSpec.parse(FULL + ",502=0.04,slow=0.01,slow_s=3")
    assert spec == FaultSpec(
        http_429=0.05,
        http_500=0.03,
        http_502=0.04,
        http_503=0.02,
        reset=0.01,
        truncate=0.01,
        fewer_choices=0.05,
        no_usage=0.02,
        slow=0.01,
        slow_s=3.0,
        quota=True,
    )


@pytest.mark.parametrize("text", ["", "none", " , "])
def test_an_empty_spec_means_no_faults(text: str) -> None:
    assert FaultSpec.parse(text) == FaultSpec()


@pytest.mark.parametrize(
    ("text", "quota"), [("quota", True), ("quota=1", True), ("quota=0", False)]
)
def test_quota_is_a_switch(text: str, quota: bool) -> None:
    assert FaultSpec.parse(text).quota is quota


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("429", "'429'"),
        ("429=2", "'429=2'"),
        ("429=x", "'429=x'"),
        ("bogus=0.1", "'bogus=0.1'"),
        ("quota=maybe", "'quota=maybe'"),
        ("reset=0.1,reset=0.2", "'reset=0.2'"),
        ("slow_s=-1", "'slow_s=-1'"),
        ("429=nan", "'429=nan'"),
    ],
)
def test_bad_specs_name_the_item(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        FaultSpec.parse(text)


def test_unknown_kinds_list_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"expected .*fewer_choices"):
        FaultSpec.parse("529=0.1")


def test_probabilities_are_validated_on_construction() -> None:
    with pytest.raises(ValueError, match="http_500"):
        FaultSpec(http_500=1.5)


def test_certain_and_impossible_faults() -> None:
    injector = FaultInjector(FaultSpec(reset=1.0), random.Random(0))
    assert all(injector.draw_error() == "reset" for _ in range(50))
    assert not any(injector.hit("truncate") for _ in range(50))


def test_error_kinds_are_drawn_in_order() -> None:
    injector = FaultInjector(FaultSpec(http_429=1.0, http_500=1.0), random.Random(0))
    assert injector.draw_error() == "429"


def test_draws_are_seeded() -> None:
    spec = FaultSpec(http_500=0.5, reset=0.5)

    def draws(seed: int) -> list[str | None]:
        injector = FaultInjector(spec, random.Random(seed))
        return [injector.draw_error() for _ in range(40)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_rates_match_probabilities() -> None:
    injector = FaultInjector(FaultSpec(no_usage=0.2), random.Random(3))
    hits = sum(injector.hit("no_usage") for _ in range(5000))
    assert 850 <= hits <= 1150


def test_fewer_choices_serves_between_one_and_n_minus_one() -> None:
    injector = FaultInjector(FaultSpec(fewer_choices=1.0), random.Random(0))
    counts = {injector.fewer(4) for _ in range(100)}
    assert counts == {1, 2, 3}
    assert injector.fewer(1) == 1


def test_truncated_bodies_do_not_parse() -> None:
    injector = FaultInjector(FaultSpec(truncate=1.0), random.Random(0))
    body = orjson.dumps({"choices": [{"text": "abc"}], "usage": {"total_tokens": 3}})
    for _ in range(50):
        cut = injector.truncate(body)
        assert body.startswith(cut)
        assert len(cut) < len(body)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(cut)


@pytest.mark.parametrize("kind", [k for k in ERROR_KINDS if k != "reset"])
def test_error_replies_have_their_status(kind: str) -> None:
    injector = FaultInjector(FaultSpec(), random.Random(0))
    reply = injector.reply(kind)  # type: ignore[arg-type]
    assert reply.status == int(kind)


def test_injected_429_asks_for_a_short_wait() -> None:
    reply = FaultInjector(FaultSpec(), random.Random(0)).reply("429")
    assert 50 <= int(reply.headers["retry-after-ms"]) <= 200
    assert orjson.loads(reply.body)["error"]["code"] == "rate_limit_exceeded"


def test_quota_reply_is_insufficient_quota() -> None:
    reply = quota_reply()
    error = orjson.loads(reply.body)["error"]
    assert (reply.status, error["code"], error["type"]) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert error["message"].startswith("You exceeded your current quota")


def test_latency_has_the_configured_mean_and_a_tail() -> None:
    latency = Latency(mean_s=0.1, rng=random.Random(0))
    draws = [latency.draw() for _ in range(4000)]
    assert statistics.fmean(draws) == pytest.approx(0.1, rel=0.08)
    assert max(draws) > 0.3


def test_zero_mean_latency_never_waits() -> None:
    assert Latency(mean_s=0.0, rng=random.Random(0)).draw() == 0.0


def test_int_field_rejects_booleans_and_out_of_range() -> None:
    assert int_field({"n": 3}, "n", lo=1, hi=8) == 3
    assert int_field({}, "n", lo=1) is None
    for bad in (True, 0, 9, 2.0, "3"):
        with pytest.raises(InvalidRequest) as caught:
            int_field({"n": bad}, "n", lo=1, hi=8)
        assert caught.value.param == "n"


def test_number_field_accepts_ints_and_floats() -> None:
    assert number_field({"t": 1}, "t", lo=0, hi=2) == 1.0
    with pytest.raises(InvalidRequest):
        number_field({"t": 2.5}, "t", lo=0, hi=2)


def test_messages_field_reads_strings_and_text_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
        ]
    }
    assert messages_field(body) == (("system", "Be brief."), ("user", "ab"), ("assistant", ""))


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content"),
    ],
)
def test_messages_field_names_the_bad_part(messages: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        messages_field({"messages": messages})
    assert caught.value.param == param


def test_stop_field_accepts_a_string_or_up_to_four() -> None:
    assert stop_field({"stop": "x"}) == ("x",)
    assert stop_field({"stop": ["a", "b"]}) == ("a", "b")
    assert stop_field({}) == ()
    with pytest.raises(InvalidRequest):
        stop_field({"stop": ["a", "b", "c", "d", "e"]})
