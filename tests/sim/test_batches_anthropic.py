"""Anthropic's Message Batches on the simulator, over loopback: create, statuses, results as
Anthropic messages equal to the realtime chat answers, cancel, expiry, listing and errors."""

from __future__ import annotations

from typing import Any

from tests.sim.batch_helpers import Harness, chat_body, harness

PATH = "/v1/messages/batches"


def params(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-sim",
        "max_tokens": 64,
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
        **fields,
    }


def requests(count: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"q-{i}", "params": params(f"Question {i}?")} for i in range(count)]


async def create(h: Harness, items: list[dict[str, Any]]) -> dict[str, Any]:
    status, batch = await h.call("POST", PATH, {"requests": items}, headers={"x-api-key": "k"})
    assert status == 200, batch
    return dict(batch)


async def results(h: Harness, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lines = await h.jsonl(batch["results_url"])
    return {item["custom_id"]: item["result"] for item in lines}


async def test_a_message_batch_runs_and_ends_with_results() -> None:
    items = requests(3)
    items.append({"custom_id": "bad", "params": {"model": "m", "messages": []}})
    async with harness(batch_delay_s=10) as h:
        created = await create(h, items)
        assert created["type"] == "message_batch"
        assert created["id"].startswith("msgbatch_")
        assert created["processing_status"] == "in_progress"
        assert created["results_url"] is None
        h.clock.now += 9.5  # every request ran; counts stay zero until the batch ended
        running = (await h.call("GET", f"{PATH}/{created['id']}"))[1]
        early = await h.call("GET", f"{PATH}/{created['id']}/results")
        h.clock.now += 1
        ended = (await h.call("GET", f"{PATH}/{created['id']}"))[1]
        found = await results(h, ended)
    assert running["processing_status"] == "in_progress"
    assert running["request_counts"] == {
        "processing": 4,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert early[0] == 400
    assert early[1]["type"] == "error"
    assert early[1]["error"]["type"] == "invalid_request_error"
    assert ended["processing_status"] == "ended"
    assert ended["ended_at"] is not None
    assert ended["created_at"].endswith("Z")
    assert ended["request_counts"]["succeeded"] == 3
    assert ended["request_counts"]["errored"] == 1
    assert ended["results_url"].endswith(f"{PATH}/{created['id']}/results")
    assert sorted(found) == ["bad", "q-0", "q-1", "q-2"]
    assert found["bad"]["type"] == "errored"
    assert found["bad"]["error"]["error"]["type"] == "invalid_request_error"
    message = found["q-0"]["message"]
    assert found["q-0"]["type"] == "succeeded"
    assert (message["type"], message["role"], message["model"]) == (
        "message",
        "assistant",
        "claude-sim",
    )
    assert message["content"][0]["type"] == "text"
    assert message["usage"]["service_tier"] == "batch"


async def test_message_answers_equal_the_realtime_chat_answers() -> None:
    system_blocks = [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]
    anthropic = [
        params("Plain question?"),
        params("Cut question?", max_tokens=5),
        params("Stop question?", stop_sequences=["###"]),
        params("With system?", system="Be brief."),
        params(
            "ignored",
            system=system_blocks,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Blocks?"}]},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "Again?"},
            ],
        ),
    ]
    chats = [
        chat_body("Plain question?", temperature=0, max_tokens=64),
        chat_body("Cut question?", temperature=0, max_tokens=5),
        chat_body("Stop question?", temperature=0, max_tokens=64, stop=["###"]),
        {
            "model": "sim-1",
            "temperature": 0,
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "With system?"},
            ],
        },
        {
            "model": "sim-1",
            "temperature": 0,
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Blocks?"},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "Again?"},
            ],
        },
    ]
    items = [{"custom_id": f"c{i}", "params": p} for i, p in enumerate(anthropic)]
    async with harness(batch_delay_s=0) as h:
        realtime = [(await h.call("POST", "/v1/chat/completions", body))[1] for body in chats]
        batch_id = (await create(h, items))["id"]
        found = await results(h, (await h.call("GET", f"{PATH}/{batch_id}"))[1])
    for index, payload in enumerate(realtime):
        message = found[f"c{index}"]["message"]
        assert message["content"][0]["text"] == payload["choices"][0]["message"]["content"]
        assert message["usage"]["input_tokens"] == payload["usage"]["prompt_tokens"]
        assert message["usage"]["output_tokens"] == payload["usage"]["completion_tokens"]
    reasons = [found[f"c{i}"]["message"]["stop_reason"] for i in range(3)]
    assert reasons == ["end_turn", "max_tokens", "stop_sequence"]
    assert found["c2"]["message"]["stop_sequence"] == "###"
    assert found["c0"]["message"]["stop_sequence"] is None
    stats = h.sim.stats
    assert stats.batch_input_tokens == stats.billed_input_tokens > 0
    assert stats.batch_output_tokens == stats.billed_output_tokens > 0


async def test_cancel_ends_the_batch_with_canceled_requests() -> None:
    async with harness(batch_delay_s=10) as h:
        batch_id = (await create(h, requests(4)))["id"]
        h.clock.now += 5
        status, canceling = await h.call("POST", f"{PATH}/{batch_id}/cancel")
        h.clock.now += 1
        ended = (await h.call("GET", f"{PATH}/{batch_id}"))[1]
        found = await results(h, ended)
    assert status == 200
    assert canceling["processing_status"] == "canceling"
    assert canceling["cancel_initiated_at"] is not None
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["succeeded"] == 2
    assert ended["request_counts"]["canceled"] == 2
    assert found["q-3"] == {"type": "canceled"}


async def test_an_unfinished_message_batch_expires() -> None:
    async with harness(batch_delay_s=10, batch_expire_s=3) as h:
        batch_id = (await create(h, requests(4)))["id"]
        h.clock.now += 3
        ended = (await h.call("GET", f"{PATH}/{batch_id}"))[1]
        found = await results(h, ended)
    assert ended["processing_status"] == "ended"
    assert ended["ended_at"] == ended["expires_at"]
    assert ended["request_counts"]["succeeded"] == 1
    assert ended["request_counts"]["expired"] == 3
    assert [found[f"q-{i}"]["type"] for i in range(4)] == ["succeeded"] + ["expired"] * 3


async def test_failed_and_erroring_message_batches() -> None:
    async with harness(batch_delay_s=0, batch_fail_rate=1.0) as h:
        failed = (await h.call("GET", f"{PATH}/{(await create(h, requests(3)))['id']}"))[1]
        found = await results(h, failed)
    assert failed["processing_status"] == "ended"
    assert failed["request_counts"]["errored"] == 3
    assert {result["error"]["error"]["type"] for result in found.values()} == {"api_error"}
    async with harness(batch_delay_s=0, batch_error_rate=0.5, seed=2) as h:
        batch = await create(h, requests(16))
        found = await results(h, (await h.call("GET", f"{PATH}/{batch['id']}"))[1])
    kinds = [result["type"] for result in found.values()]
    assert 0 < kinds.count("errored") < 16
    errored = [result for result in found.values() if result["type"] == "errored"]
    assert {result["error"]["error"]["type"] for result in errored} == {"api_error"}
    assert all(result["error"]["request_id"] for result in errored)


async def test_the_list_pages_newest_first_both_ways() -> None:
    async with harness() as h:
        ids = [(await create(h, requests(1)))["id"] for _ in range(5)]
        first = (await h.call("GET", f"{PATH}?limit=2"))[1]
        second = (await h.call("GET", f"{PATH}?limit=2&after_id={first['last_id']}"))[1]
        third = (await h.call("GET", f"{PATH}?limit=2&after_id={second['last_id']}"))[1]
        back = (await h.call("GET", f"{PATH}?limit=2&before_id={second['first_id']}"))[1]
        _, openai = await h.call("GET", "/v1/batches")
    newest = ids[::-1]
    assert [b["id"] for b in first["data"]] == newest[:2]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (*newest[:2], True)
    assert [b["id"] for b in second["data"]] == newest[2:4]
    assert [b["id"] for b in third["data"]] == newest[4:]
    assert third["has_more"] is False
    assert [b["id"] for b in back["data"]] == newest[:2]
    assert back["has_more"] is False
    assert openai["data"] == []  # the two APIs keep their batches apart


async def test_bad_calls_get_anthropic_errors() -> None:
    one = requests(1)
    bad = [
        {"requests": []},
        {"requests": [{"custom_id": "has space", "params": params("x")}]},
        {"requests": [*one, *one]},
        {"requests": one, "metadata": {"gpo_tag": "t"}},  # Message Batches have no metadata
        {"requests": [{"custom_id": "a"}]},
    ]
    async with harness() as h:
        replies = [await h.call("POST", PATH, body) for body in bad]
        missing = await h.call("GET", f"{PATH}/msgbatch_nope")
        refused = await h.call("GET", PATH, headers={"x-api-key": "sk-invalid"})
    for status, body in replies:
        assert status == 400
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    assert missing[0] == 404
    assert missing[1]["error"]["type"] == "not_found_error"
    assert refused[0] == 401
    assert refused[1]["error"]["type"] == "authentication_error"
    assert h.sim.stats.batches_created == 0
