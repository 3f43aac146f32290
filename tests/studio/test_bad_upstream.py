"""An upstream that answers something other than OpenAI JSON is the upstream's failure: 502
``upstream_error`` naming its host and what it answered, never a 500 and never a key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api import fastpath
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.upstream import UpstreamPool, upstream_host
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.proxy import proxy as real_proxy
from neocloud.studio.runtime import StudioRuntime

CHAT = "/v1/chat/completions"
UPSTREAM_KEY = "sk-upstream-secret-0123456789"


def _upstream(answer: dict[str, Any]) -> httpx2.MockTransport:
    """Answers ``answer["status"]`` with ``answer["body"]`` (text), in which ``{key}`` is the
    bearer token the gateway sent: a misconfigured proxy that echoes the request back."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":  # the pool's health probe
            return httpx2.Response(200, json={"object": "list", "data": []})
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = str(answer["body"]).replace("{key}", key)
        return httpx2.Response(answer["status"], text=body, headers={"content-type": "text/html"})

    return httpx2.MockTransport(handle)


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests the fast path served (it calls the proxy; the full stack does not)."""
    calls: list[str] = []

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["endpoint"])
        return await real_proxy(*args, **kwargs)

    monkeypatch.setattr(fastpath, "proxy", spy)
    return calls


@pytest.fixture
def answer() -> dict[str, Any]:
    return {"status": 200, "body": "<html>hello</html>"}


@pytest.fixture
def http(app: FastAPI, admin_key: str, answer: dict[str, Any]) -> Iterator[TestClient]:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = MemoryUsageSink()
    pool = UpstreamPool(
        "vllm-a",
        ["http://gpu-7.local:8000/v1"],
        client=httpx2.AsyncClient(transport=_upstream(answer)),
        api_key=UPSTREAM_KEY,
    )
    runtime.catalog.add_upstream(pool)
    runtime.catalog.add(
        CatalogModel("meta/llama", "vllm-a", ModelKind.TEXT, 8192, Decimal("0.1"), Decimal("0.2"))
    )
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        yield http


def _chat() -> dict[str, Any]:
    return {"model": "meta/llama", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("status", "body", "what"),
    [
        (200, "<html><body>502 Bad Gateway (nginx) {key}</body></html>", "not JSON"),
        (503, "upstream connect error or disconnect/reset before headers", "not JSON"),
        (200, '["a", "list"]', "JSON that is not an object"),
    ],
)
def test_a_non_json_answer_is_a_502_naming_the_upstream(
    http: TestClient,
    app: FastAPI,
    answer: dict[str, Any],
    fast_calls: list[str],
    status: int,
    body: str,
    what: str,
) -> None:
    answer.update(status=status, body=body)
    # The key's first request goes through the full stack, the second through the fast path.
    for _ in range(2):
        response = http.post(CHAT, json=_chat())
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["type"] == "upstream_error"
        assert error["code"] == "bad_upstream_response"
        assert error["param"] is None
        assert "gpu-7.local:8000" in error["message"]
        assert f"answered {status}" in error["message"]
        assert what in error["message"]
        assert error["details"] == {"upstream": "gpu-7.local:8000", "upstream_status": status}
        assert UPSTREAM_KEY not in response.text
    assert fast_calls == ["chat.completions"]  # the second went the fast path, the same way
    runtime: StudioRuntime = app.state.studio
    runtime.usage.flush()
    sink = runtime.usage.sink
    assert isinstance(sink, MemoryUsageSink)
    assert sink.records == []  # nothing was answered: nothing is metered


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_an_upstream_json_error_is_still_passed_through(
    http: TestClient, answer: dict[str, Any]
) -> None:
    error = {"error": {"message": "too long", "type": "BadRequestError", "code": 400}}
    answer.update(status=400, body=json.dumps(error))
    response = http.post(CHAT, json=_chat())
    assert response.status_code == 400
    assert response.json() == error


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://10.0.0.5:8000/v1", "10.0.0.5:8000"),
        ("https://user:pass@api.example.com/v1", "api.example.com"),
        ("http://[::1]:8000/v1", "[::1]:8000"),
    ],
)
def test_upstream_host_never_carries_credentials(url: str, host: str) -> None:
    assert upstream_host(url) == host
