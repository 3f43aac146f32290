"""Upstream engines: an OpenAI-compatible server behind the gateway, balanced and metered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx2
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.runtime import StudioRuntime


def _fake_upstream(seen: list[dict[str, object]]) -> httpx2.MockTransport:
    """A minimal vLLM: answers 'hi there' and counts 3 prompt tokens."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), **body})
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        base = {"id": "up-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "hi there"}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            out = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return httpx2.Response(200, json=out)
        frames = []
        steps = [
            ({"role": "assistant", "content": ""}, None),
            ({"content": "hi"}, None),
            ({"content": " there"}, None),
            ({}, "stop"),
        ]
        for delta, finish in steps:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            frames.append(
                {**base, "object": "chat.completion.chunk", "choices": [choice], "usage": None}
            )
        frames.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        text = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
        return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})

    return httpx2.MockTransport(handle)


@pytest.fixture
def seen() -> list[dict[str, object]]:
    return []


@pytest.fixture
def oai(app: FastAPI, admin_key: str, seen: list[dict[str, object]]) -> Iterator[openai.OpenAI]:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = MemoryUsageSink()
    pool = UpstreamPool(
        "vllm-a",
        ["http://a.local/v1", "http://b.local/v1"],
        client=httpx2.AsyncClient(transport=_fake_upstream(seen)),
    )
    runtime.catalog.add_upstream(pool)
    runtime.catalog.add(
        CatalogModel(
            "meta/llama-3-8b",
            "vllm-a",
            ModelKind.TEXT,
            8192,
            Decimal("0.1"),
            Decimal("0.2"),
            upstream_model="meta-llama/Meta-Llama-3-8B-Instruct",
        )
    )
    with TestClient(app) as http:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )


def _records(app: FastAPI) -> list[tuple[int, int, bool]]:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.flush()
    sink = runtime.usage.sink
    assert isinstance(sink, MemoryUsageSink)
    return [(r.prompt_tokens, r.completion_tokens, r.aborted) for r in sink.records]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_upstream_chat_is_passed_through_and_metered(
    oai: openai.OpenAI, app: FastAPI, seen: list[dict[str, object]]
) -> None:
    assert "meta/llama-3-8b" in [m.id for m in oai.models.list()]
    out = oai.chat.completions.create(
        model="meta/llama-3-8b", messages=[{"role": "user", "content": "hello"}]
    )
    assert out.model == "meta/llama-3-8b"
    assert out.choices[0].message.content == "hi there"
    assert seen[0]["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    chunks = list(
        oai.chat.completions.create(
            model="meta/llama-3-8b", messages=[{"role": "user", "content": "hello"}], stream=True
        )
    )
    # The client did not ask for usage: the gateway asked upstream anyway and hid it again.
    assert seen[1]["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hi there"
    assert _records(app) == [(3, 2, False), (3, 2, False)]


def test_least_outstanding_replica_is_picked() -> None:
    pool = UpstreamPool("p", ["http://a/v1", "http://b/v1", "http://c/v1"])
    a, b, c = pool.replicas
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert pool.pick() is b
    b.down_until = pool.now() + 60  # refused a connection: skipped while cooling down
    assert pool.pick() is c
