"""The official ``openai`` SDK drives the simulator's Batch API: it must read our objects."""

from __future__ import annotations

import io

import openai
import orjson

from pipeline.sim.server import SimConfig, open_simulator


def input_file(count: int) -> bytes:
    body = {"model": "sim-1", "temperature": 0}
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {**body, "messages": [{"role": "user", "content": f"Question {i}?"}]},
            }
        )
        + b"\n"
        for i in range(count)
    )


async def test_the_sdk_uploads_creates_polls_lists_and_reads_results() -> None:
    async with open_simulator(SimConfig(batch_delay_s=0)) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        try:
            upload = await client.files.create(
                file=("in.jsonl", io.BytesIO(input_file(3))), purpose="batch"
            )
            created = await client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"gpo_tag": "sdk"},
            )
            batch = await client.batches.retrieve(created.id)
            assert batch.output_file_id is not None
            content = await client.files.content(batch.output_file_id)
            listed = [item.id async for item in client.batches.list(limit=1)]
        finally:
            await client.close()
    assert upload.purpose == "batch"
    assert created.status == "validating"
    assert batch.status == "completed"
    assert batch.metadata == {"gpo_tag": "sdk"}
    assert batch.request_counts is not None
    assert batch.request_counts.completed == 3
    lines = [orjson.loads(line) for line in content.content.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["r0", "r1", "r2"]
    assert listed == [created.id]
