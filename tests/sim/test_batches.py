"""OpenAI's Batch API on the simulator, over loopback: files, statuses on the simulator's clock,
results, listing, cancel, expiry, failures, answers equal to realtime ones, and the counters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.sim.faults import FaultSpec
from tests.sim.batch_helpers import chat_body, harness, line

BODIES = [chat_body(f"Question number {i}?", temperature=0) for i in range(4)]


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["custom_id"]: item for item in lines}


async def test_a_batch_goes_through_its_statuses_on_the_clock() -> None:
    async with harness(batch_delay_s=10) as h:
        created = await h.openai_batch(BODIES)
        assert created["status"] == "validating"
        assert created["object"] == "batch"
        assert created["request_counts"] == {"total": 4, "completed": 0, "failed": 0}
        assert created["expires_at"] - created["created_at"] == 86_400
        batch_id = created["id"]
        now = await h.batch(batch_id)
        assert now["status"] == "in_progress"
        assert now["in_progress_at"] == created["created_at"]
        h.clock.now += 4.6  # requests fall due at 2.25, 4.5, 6.75 and 9 s
        half = await h.batch(batch_id)
        assert (half["status"], half["request_counts"]["completed"]) == ("in_progress", 2)
        assert half["output_file_id"] is None
        h.clock.now += 4.5
        finalizing = await h.batch(batch_id)
        assert finalizing["status"] == "finalizing"
        assert finalizing["finalizing_at"] is not None
        assert finalizing["completed_at"] is None
        h.clock.now += 1
        done = await h.batch(batch_id)
    assert done["status"] == "completed"
    assert done["completed_at"] == done["created_at"] + 10
    assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert done["error_file_id"] is None
    assert h.sim.stats.batch_requests_succeeded == 4


async def test_output_file_holds_one_response_per_request() -> None:
    async with harness(batch_delay_s=0) as h:
        created = await h.openai_batch(BODIES, ids=["a", "b", "c", "d"])
        assert (created["status"], created["output_file_id"]) == ("validating", None)
        batch = await h.batch(created["id"])
        output = await h.jsonl(f"/v1/files/{batch['output_file_id']}/content")
        status, meta = await h.call("GET", f"/v1/files/{batch['output_file_id']}")
    assert batch["status"] == "completed"
    assert sorted(item["custom_id"] for item in output) == ["a", "b", "c", "d"]
    assert len({item["id"] for item in output}) == 4
    for item in output:
        assert item["id"].startswith("batch_req_")
        assert item["error"] is None
        response = item["response"]
        assert response["status_code"] == 200
        assert response["request_id"]
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["content"]
    assert status == 200
    assert meta["purpose"] == "batch_output"


async def test_batched_answers_equal_realtime_answers_and_are_billed_apart() -> None:
    bodies = [
        chat_body("Same question?", temperature=0),
        chat_body("Seeded question?", temperature=1.0, seed=7, n=2),
        chat_body("Cut question?", temperature=0, stop=["###"], max_tokens=12),
        {
            "model": "sim-1",
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Parts?"}]},
            ],
        },
    ]
    async with harness(batch_delay_s=0) as h:
        realtime = [await h.call("POST", "/v1/chat/completions", body) for body in bodies]
        billed = (h.sim.stats.billed_input_tokens, h.sim.stats.billed_output_tokens)
        batch = await h.batch((await h.openai_batch(bodies))["id"])
        output = by_custom_id(await h.jsonl(f"/v1/files/{batch['output_file_id']}/content"))
    for index, (status, payload) in enumerate(realtime):
        assert status == 200
        batched = output[f"r{index}"]["response"]["body"]
        assert batched["choices"] == payload["choices"]
        assert batched["usage"] == payload["usage"]
    assert output["r2"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    stats = h.sim.stats
    assert (stats.billed_input_tokens, stats.billed_output_tokens) == billed
    assert stats.batch_input_tokens == billed[0] > 0
    assert stats.batch_output_tokens == billed[1] > 0
    assert stats.choices_served == 5
    assert stats.batch_choices_served == 5


async def test_batches_skip_the_realtime_limits_and_faults() -> None:
    faults = FaultSpec(http_500=1.0)
    async with harness(batch_delay_s=0, rpm=1, faults=faults) as h:
        assert (await h.call("POST", "/v1/chat/completions", chat_body()))[0] == 500
        assert (await h.call("POST", "/v1/chat/completions", chat_body()))[0] == 429
        batch = await h.batch((await h.openai_batch(BODIES))["id"])
    assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert h.sim.stats.faults["500"] == 1
    assert h.sim.stats.rate_limited == 1


async def test_metadata_round_trips_and_the_list_pages_newest_first() -> None:
    async with harness() as h:
        ids = []
        for index in range(5):
            batch = await h.openai_batch(BODIES[:1], metadata={"gpo_tag": f"t{index}"})
            assert batch["metadata"] == {"gpo_tag": f"t{index}"}
            ids.append(batch["id"])
        assert (await h.batch(ids[2]))["metadata"] == {"gpo_tag": "t2"}
        pages: list[dict[str, Any]] = []
        query = "/v1/batches?limit=2"
        while True:
            status, page = await h.call("GET", query)
            assert status == 200
            pages.append(page)
            if not page["has_more"]:
                break
            query = f"/v1/batches?limit=2&after={page['last_id']}"
        status, default = await h.call("GET", "/v1/batches")
    listed = [batch["id"] for page in pages for batch in page["data"]]
    assert listed == ids[::-1]
    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert pages[0]["object"] == "list"
    assert (pages[0]["first_id"], pages[0]["last_id"]) == (ids[4], ids[3])
    assert [batch["metadata"]["gpo_tag"] for batch in pages[1]["data"]] == ["t2", "t1"]
    assert [batch["id"] for batch in default["data"]] == ids[::-1]


async def test_bad_create_calls_are_400s() -> None:
    async with harness() as h:
        file_id = await h.upload([line("a", chat_body())])
        base = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        window = {"completion_window": "24h"}
        cases = [
            {**base, "completion_window": "1h"},
            {**base, **window, "input_file_id": "file-nope"},
            {**base, **window, "endpoint": "/v1/embeddings"},
            {**base, **window, "metadata": {"k": 1}},
            {**base, **window, "metadata": {f"k{i}": "v" for i in range(17)}},
        ]
        statuses = [await h.call("POST", "/v1/batches", case) for case in cases]
        missing = await h.call("GET", "/v1/batches/batch_nope")
        bad_limit = await h.call("GET", "/v1/batches?limit=0")
    assert [status for status, _ in statuses] == [400] * len(cases)
    assert statuses[3][1]["error"]["param"] == "metadata"
    assert missing[0] == 404
    assert "batch_nope" in missing[1]["error"]["message"]
    assert bad_limit[0] == 400
    assert h.sim.stats.batches_created == 0


async def test_cancel_keeps_what_ran_and_cancels_the_rest() -> None:
    async with harness(batch_delay_s=10) as h:
        batch_id = (await h.openai_batch(BODIES))["id"]
        h.clock.now += 5
        status, cancelling = await h.call("POST", f"/v1/batches/{batch_id}/cancel")
        assert status == 200
        assert cancelling["status"] == "cancelling"
        assert cancelling["cancelling_at"] is not None
        h.clock.now += 20
        batch = await h.batch(batch_id)
        again = (await h.call("POST", f"/v1/batches/{batch_id}/cancel"))[1]
        output = await h.jsonl(f"/v1/files/{batch['output_file_id']}/content")
        errors = await h.jsonl(f"/v1/files/{batch['error_file_id']}/content")
    assert batch["status"] == again["status"] == "cancelled"
    assert batch["cancelled_at"] == cancelling["cancelling_at"]
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert sorted(item["custom_id"] for item in output) == ["r0", "r1"]
    assert sorted(item["custom_id"] for item in errors) == ["r2", "r3"]
    assert {item["error"]["code"] for item in errors} == {"batch_cancelled"}
    assert all(item["response"] is None for item in errors)
    assert h.sim.stats.batch_requests_canceled == 2


async def test_an_unfinished_batch_expires() -> None:
    async with harness(batch_delay_s=10, batch_expire_s=5) as h:
        batch_id = (await h.openai_batch(BODIES))["id"]
        h.clock.now += 4
        assert (await h.batch(batch_id))["status"] == "in_progress"
        h.clock.now += 2
        batch = await h.batch(batch_id)
        errors = await h.jsonl(f"/v1/files/{batch['error_file_id']}/content")
    assert batch["status"] == "expired"
    assert batch["expired_at"] == batch["created_at"] + 5
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {item["error"]["code"] for item in errors} == {"batch_expired"}
    assert h.sim.stats.batch_requests_expired == 2


async def test_an_invalid_input_file_fails_the_batch() -> None:
    lines = [
        line("a", chat_body()),
        line("a", chat_body("again")),
        line("b", chat_body(), url="/v1/embeddings"),
        line("c", chat_body(), method="GET"),
        {"method": "POST", "url": "/v1/chat/completions", "body": chat_body()},
    ]
    raw = b"".join(orjson_line(item) for item in lines) + b"not json\n"
    async with harness(batch_delay_s=0) as h:
        file_id = await h.upload([], raw=raw)
        request = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        created = (await h.call("POST", "/v1/batches", request))[1]
        batch = await h.batch(created["id"])
        content = await h.raw(f"/v1/files/{file_id}/content")
    assert created["status"] == "validating"
    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    assert batch["output_file_id"] is None
    assert batch["error_file_id"] is None
    errors = [(e["line"], e["code"]) for e in batch["errors"]["data"]]
    assert errors == [
        (2, "duplicate_custom_id"),
        (3, "mismatched_endpoint"),
        (4, "invalid_method"),
        (5, "missing_required_parameter"),
        (6, "invalid_json_line"),
    ]
    assert content == raw  # the input file reads back as uploaded
    assert h.sim.stats.batches_failed == 1
    assert h.sim.stats.batch_input_tokens == 0


async def test_an_empty_input_file_fails_the_batch() -> None:
    async with harness(batch_delay_s=0) as h:
        file_id = await h.upload([], raw=b"\n")
        request = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch = await h.batch((await h.call("POST", "/v1/batches", request))[1]["id"])
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "invalid_request_count"
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def orjson_line(item: object) -> bytes:
    return orjson.dumps(item) + b"\n"


async def test_batch_fail_rate_fails_a_seeded_share_of_batches() -> None:
    async def statuses(seed: int) -> list[str]:
        async with harness(batch_delay_s=0, batch_fail_rate=0.5, seed=seed) as h:
            ids = [(await h.openai_batch(BODIES[:1]))["id"] for _ in range(12)]
            return [(await h.batch(batch_id))["status"] for batch_id in ids]

    first = await statuses(3)
    assert set(first) == {"failed", "completed"}
    assert await statuses(3) == first
    async with harness(batch_delay_s=0, batch_fail_rate=1.0) as h:
        batch = await h.batch((await h.openai_batch(BODIES))["id"])
    assert batch["errors"]["data"][0]["code"] == "simulated_failure"


async def test_request_errors_make_a_partial_batch() -> None:
    bodies = [chat_body(f"Question {i}?", temperature=0) for i in range(20)]
    bodies[3] = {"model": "sim-1", "messages": []}  # the chat route refuses this body

    async def run() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        async with harness(batch_delay_s=0, batch_error_rate=0.3, seed=5) as h:
            batch = await h.batch((await h.openai_batch(bodies))["id"])
            output = await h.jsonl(f"/v1/files/{batch['output_file_id']}/content")
            errors = await h.jsonl(f"/v1/files/{batch['error_file_id']}/content")
            return batch, output, errors

    batch, output, errors = await run()
    assert batch["status"] == "completed"
    counts = batch["request_counts"]
    assert counts["completed"] == len(output)
    assert counts["failed"] == len(errors)
    assert counts["completed"] + counts["failed"] == 20
    assert 2 <= len(errors) <= 15
    by_id = by_custom_id(errors)
    assert by_id["r3"]["response"]["status_code"] == 400
    assert by_id["r3"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    drawn = [item for item in errors if item["custom_id"] != "r3"]
    assert drawn
    assert {item["response"]["status_code"] for item in drawn} == {500}
    assert {item["response"]["body"]["error"]["type"] for item in drawn} == {"server_error"}
    assert sorted(by_id) == sorted(by_custom_id((await run())[2]))  # same seed, same errors


async def test_duplicate_submissions_are_counted() -> None:
    bodies = [chat_body(f"Q{i}", temperature=0) for i in range(6)]
    async with harness(batch_delay_s=10) as h:
        await h.openai_batch(bodies[:3])
        await h.openai_batch(bodies[3:])  # new work
        assert h.sim.stats.batches_duplicated == 0
        await h.openai_batch([bodies[2], bodies[3], chat_body("new")], ids=["x", "y", "z"])
        assert (h.sim.stats.batches_duplicated, h.sim.stats.batch_requests_duplicated) == (1, 2)
        canceled = (await h.openai_batch([chat_body("gone")]))["id"]
        await h.call("POST", f"/v1/batches/{canceled}/cancel")
        await h.openai_batch([chat_body("gone")])  # a retry of canceled work
        h.clock.now += 11
        await h.openai_batch(bodies[:1])  # repeats work that completed
        status, remote = await h.call("GET", "/_sim/stats")
    stats = h.sim.stats
    assert (stats.batches_duplicated, stats.batch_requests_duplicated) == (2, 3)
    assert stats.batches_created == 6
    assert stats.batch_sizes == [3, 3, 3, 1, 1, 1]
    assert status == 200
    assert remote["batches_duplicated"] == 2
    assert remote["batch_requests_duplicated"] == 3
    assert remote["batch_sizes"] == [3, 3, 3, 1, 1, 1]
    assert remote["requests"]["/v1/batches/{batch_id}/cancel"] == 1
    assert remote["requests"]["/v1/files"] == 6


async def test_invalid_key_is_refused_on_batch_routes() -> None:
    async with harness() as h:
        headers = {"Authorization": "Bearer sk-invalid"}
        status, body = await h.call("GET", "/v1/batches", headers=headers)
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("flag", ["--batch-fail-rate", "--batch-error-rate", "--batch-expire-s"])
def test_bad_batch_flags_exit_2(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.sim.cli import main_sim

    assert main_sim([flag, "-1"]) == 2
    assert flag.removeprefix("--").replace("-", "_") in capsys.readouterr().err
