"""The pure-ASGI route for upstream completions answers as the full stack does.

A key's first request goes through FastAPI (and fills the principal cache); later ordinary
requests for an upstream model are served by ``neocloud.api.fastpath``. Each test says which path
served a request by counting the fast path's calls to the proxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api import fastpath
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.proxy import proxy as real
from neocloud.studio.runtime import StudioRuntime

CHAT = "/v1/chat/completions"


def _compact(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _upstream(seen: list[dict[str, Any]]) -> httpx2.MockTransport:
    """vLLM's wire format: compact JSON, ``"usage":null`` on every chunk, a usage chunk last."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":  # the pool's health probe
            return httpx2.Response(200, json={"object": "list", "data": []})
        body = json.loads(request.content)
        seen.append(body)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        base = {"id": "up-1", "object": "chat.completion.chunk", "created": 1}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "hi there"}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            out = {**base, "object": "chat.completion", "model": body["model"]}
            return httpx2.Response(200, json={**out, "choices": [choice], "usage": usage})
        frames = []
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": "hi"}, None),
            ({"content": ' "model":"x" there'}, None),
            ({}, "stop"),
        ):
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            frames.append({**base, "model": body["model"], "choices": [choice], "usage": None})
        frames.append({**base, "model": body["model"], "choices": [], "usage": usage})
        text = "".join(f"data: {_compact(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
        return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})

    return httpx2.MockTransport(handle)


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["endpoint"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastpath, "proxy", spy)
    return calls


@pytest.fixture
def sink(app: FastAPI) -> MemoryUsageSink:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = MemoryUsageSink()
    assert isinstance(runtime.usage.sink, MemoryUsageSink)
    return runtime.usage.sink


@pytest.fixture
def http(
    app: FastAPI, admin_key: str, seen: list[dict[str, Any]], sink: MemoryUsageSink
) -> Iterator[TestClient]:
    runtime: StudioRuntime = app.state.studio
    pool = UpstreamPool(
        "vllm-a", ["http://a.local/v1"], client=httpx2.AsyncClient(transport=_upstream(seen))
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
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        yield http


def _chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": "meta/llama-3-8b",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5,
        **extra,
    }


def _events(text: str) -> list[Any]:
    out = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: ")
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_plain_answers_are_the_same_on_both_paths(
    http: TestClient, fast_calls: list[str], seen: list[dict[str, Any]], sink: MemoryUsageSink
) -> None:
    slow = http.post(CHAT, json=_chat())
    fast = http.post(CHAT, json=_chat(), headers={"X-Request-Id": "trace-7"})
    assert fast_calls == ["chat.completions"]  # the first filled the key cache
    assert slow.status_code == fast.status_code == 200
    assert slow.json() == fast.json()
    assert fast.json()["model"] == "meta/llama-3-8b"
    assert seen[-1]["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert slow.headers["x-request-id"].startswith("req_")
    assert fast.headers["x-request-id"] == "trace-7"
    assert fast.headers["content-type"] == slow.headers["content-type"]
    http.app.state.studio.usage.flush()  # type: ignore[attr-defined]
    assert [(r.prompt_tokens, r.completion_tokens, r.aborted) for r in sink.records] == [
        (3, 2, False),
        (3, 2, False),
    ]


@pytest.mark.parametrize("include_usage", [False, True])
def test_streams_are_the_same_on_both_paths(
    http: TestClient, fast_calls: list[str], sink: MemoryUsageSink, include_usage: bool
) -> None:
    extra: dict[str, Any] = {"stream": True}
    if include_usage:
        extra["stream_options"] = {"include_usage": True}
    http.post(CHAT, json=_chat())  # fills the key cache
    fast = http.post(CHAT, json=_chat(**extra))
    assert fast_calls == ["chat.completions"]
    assert fast.status_code == 200
    assert fast.headers["content-type"].startswith("text/event-stream")
    assert fast.headers["x-request-id"]
    events = _events(fast.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["model"] == "meta/llama-3-8b" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == 'hi "model":"x" there'  # the text is not touched by the model rewrite
    if include_usage:
        assert all("usage" in c for c in chunks)
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 5
    else:
        assert all("usage" not in c for c in chunks)
        assert all(c["choices"] for c in chunks)
    http.app.state.studio.usage.flush()  # type: ignore[attr-defined]
    assert (sink.records[-1].prompt_tokens, sink.records[-1].completion_tokens) == (3, 2)
    assert sink.records[-1].aborted is False


def test_rate_limits_on_the_fast_path_answer_429_with_retry_after(
    http: TestClient, fast_calls: list[str]
) -> None:
    key = http.get("/api/v1/keys").json()["data"][0]["id"]
    answer = http.put(f"/api/v1/studio/keys/{key}/limits", json={"requests_per_minute": 2})
    assert answer.status_code == 200
    assert http.post(CHAT, json=_chat()).status_code == 200  # fills the key cache
    assert http.post(CHAT, json=_chat()).status_code == 200
    refused = http.post(CHAT, json=_chat())
    assert fast_calls == ["chat.completions", "chat.completions"]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"]


def test_a_suspended_org_is_refused_on_the_fast_path(
    http: TestClient, fast_calls: list[str]
) -> None:
    assert http.post(CHAT, json=_chat()).status_code == 200
    org = http.get("/api/v1/orgs").json()["data"][0]["id"]
    assert http.put(f"/api/v1/studio/orgs/{org}/budget", json={"suspended": True}).is_success
    refused = http.post(CHAT, json=_chat(stream=True))
    assert fast_calls == ["chat.completions"]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "meta/llama-3-8b"}, 400, "missing_required_parameter", "messages"),
        (_chat(temperature=9), 400, "invalid_value", "temperature"),
        (_chat(model="no/such-model"), 404, None, "model"),
        ("not json", 400, "invalid_json", None),
    ],
)
def test_bad_requests_fall_through_to_the_full_stack(
    http: TestClient,
    fast_calls: list[str],
    body: Any,
    status: int,
    code: str | None,
    param: str | None,
) -> None:
    assert http.post(CHAT, json=_chat()).status_code == 200  # the key is cached now
    if isinstance(body, str):
        answer = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    else:
        answer = http.post(CHAT, json=body)
    assert fast_calls == []
    assert answer.status_code == status
    error = answer.json()["error"]
    if code is not None:
        assert error["code"] == code
    assert error["param"] == param
    assert answer.headers["x-request-id"]


def test_idempotent_requests_and_unknown_keys_take_the_full_stack(
    http: TestClient, fast_calls: list[str]
) -> None:
    assert http.post(CHAT, json=_chat()).status_code == 200
    first = http.post(CHAT, json=_chat(), headers={"Idempotency-Key": "k-1"})
    again = http.post(CHAT, json=_chat(), headers={"Idempotency-Key": "k-1"})
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    wrong = http.post(CHAT, json=_chat(), headers={"Authorization": "Bearer nck_wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert fast_calls == []


def test_an_oversized_body_is_refused_by_either_path(
    http: TestClient, fast_calls: list[str]
) -> None:
    assert http.post(CHAT, json=_chat()).status_code == 200
    limit = http.app.state.ctx.settings.max_body_bytes  # type: ignore[attr-defined]
    huge = _chat(messages=[{"role": "user", "content": "x" * (limit + 10)}])
    answer = http.post(CHAT, json=huge)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert fast_calls == []


def test_compact_chunks_pass_through_as_text_and_others_are_parsed() -> None:
    from neocloud.studio.proxy import _Rewrite

    hide = _Rewrite("up/m", "our/m", include_usage=False)
    keep = _Rewrite("up/m", "our/m", include_usage=True)
    chunk = '{"id":"1","model":"up/m","choices":[{"delta":{"content":"hi"}}],"usage":null}'
    assert hide.pass_through(chunk) == (
        'data: {"id":"1","model":"our/m","choices":[{"delta":{"content":"hi"}}]}\n\n',
        True,
    )
    passed = keep.pass_through(chunk)
    assert passed is not None
    assert json.loads(passed[0][len("data: ") :])["usage"] is None
    empty = '{"model":"up/m","choices":[{"delta":{"role":"assistant","content":""}}]}'
    assert hide.pass_through(empty) == (f"data: {empty.replace('up/m', 'our/m')}\n\n", False)
    # Usage counted, another model name, or spacing: parsed by the caller instead.
    assert hide.pass_through('{"model":"up/m","choices":[],"usage":{"prompt_tokens":1}}') is None
    assert hide.pass_through('{"model":"other","choices":[]}') is None
    assert hide.pass_through('{"model": "up/m", "choices": []}') is None


def _serve(app: Any, lifespan: Literal["on", "off"] = "off") -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(timeout=10)


class _SlowUpstream:
    """Streams one word every 20 ms, up to 1000, in vLLM's compact format; notes when the
    gateway hangs up."""

    def __init__(self) -> None:
        self.hung_up = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"data":[]}'})
            return
        body = json.loads((await receive())["body"])
        disconnect = asyncio.ensure_future(receive())
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for n in range(1000):
            if disconnect.done():
                self.hung_up.set()
                return
            choice = {"index": 0, "delta": {"content": f" w{n}"}, "finish_reason": None}
            chunk = {"id": "s", "model": body["model"], "choices": [choice], "usage": None}
            frame = f"data: {_compact(chunk)}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            await asyncio.sleep(0.02)
        disconnect.cancel()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_an_aborted_fast_stream_is_metered_and_the_upstream_released(
    app: FastAPI, admin_key: str, sink: MemoryUsageSink, fast_calls: list[str]
) -> None:
    upstream = _SlowUpstream()
    up_server = _serve(upstream)
    up_port = next(up_server)
    runtime: StudioRuntime = app.state.studio
    runtime.catalog.add_upstream(UpstreamPool("slow", [f"http://127.0.0.1:{up_port}/v1"]))
    runtime.catalog.add(
        CatalogModel("up/slow", "slow", ModelKind.TEXT, 4096, Decimal(1), Decimal(2))
    )
    gateway = _serve(app, lifespan="on")  # on: the pool's connections are closed at the end
    port = next(gateway)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as http:
            http.headers["Authorization"] = f"Bearer {admin_key}"
            assert http.get("/v1/models").status_code == 200  # fills the key cache
            body = _chat(model="up/slow", stream=True, max_tokens=1000)
            with http.stream("POST", CHAT, json=body) as answer:
                assert answer.status_code == 200
                seen = 0
                for line in answer.iter_lines():
                    seen += line.startswith("data: ")
                    if seen == 4:
                        break
        assert fast_calls == ["chat.completions"]
        deadline = time.monotonic() + 10
        while not sink.records and time.monotonic() < deadline:
            runtime.usage.flush()
            time.sleep(0.05)
        [record] = sink.records
        assert record.aborted
        assert 4 <= record.completion_tokens < 100  # one per chunk sent: no upstream usage yet
        assert upstream.hung_up.wait(5)  # the gateway closed its upstream stream too
    finally:
        for server in (gateway, up_server):
            next(server, None)


def test_an_unexpected_error_on_the_fast_path_is_a_500_in_the_platform_shape(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert http.post(CHAT, json=_chat()).status_code == 200  # the key is cached now

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(fastpath, "proxy", broken)
    answer = http.post(CHAT, json=_chat())
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert answer.json()["error"]["type"] == "api_error"
    assert answer.headers["x-request-id"]


def test_completions_take_the_fast_path_too(
    http: TestClient, fast_calls: list[str], seen: list[dict[str, Any]]
) -> None:
    body = {"model": "meta/llama-3-8b", "prompt": "hello", "max_tokens": 5}
    slow = http.post("/v1/completions", json=body)
    fast = http.post("/v1/completions", json=body)
    assert fast_calls == ["completions"]
    assert slow.status_code == fast.status_code == 200
    assert slow.json() == fast.json()
    assert fast.json()["model"] == "meta/llama-3-8b"
    assert seen[-1]["prompt"] == "hello"
    bad = http.post("/v1/completions", json={**body, "prompt": ["a", "b"]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prompt"
    assert fast_calls == ["completions"]
