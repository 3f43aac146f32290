"""429 ``insufficient_quota`` (the org cannot pay) next to 429 ``rate_limit_exceeded`` (too fast):
org budgets and suspension, per-key limit overrides, and the openai client's reaction to each."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.studio.runtime import StudioRuntime


def _org(http: TestClient) -> str:
    return str(http.get("/api/v1/orgs").json()["data"][0]["id"])


def _key(http: TestClient) -> str:
    return str(http.get("/api/v1/keys").json()["data"][0]["id"])


def _counting_client(http: TestClient, key: str, **kw: Any) -> tuple[openai.OpenAI, list[str]]:
    seen: list[str] = []
    http.event_hooks["request"] = [lambda request: seen.append(request.url.path)]
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, **kw)
    return client, seen


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="neocloud/echo", messages=[{"role": "user", "content": "one two"}], max_tokens=2
    )


def test_a_suspended_org_gets_insufficient_quota_and_the_client_does_not_retry(
    http: TestClient, admin_key: str
) -> None:
    org = _org(http)
    answer = http.put(f"/api/v1/studio/orgs/{org}/budget", json={"suspended": True})
    assert answer.status_code == 200
    assert answer.json()["suspended"] is True
    client, seen = _counting_client(http, admin_key, max_retries=5)
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert seen == ["/v1/chat/completions"]  # once: not retried (max_retries=5 was allowed)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="neocloud/hash-embed", input="x")
    # Lifting the suspension serves the org again at once (this process dropped its cache).
    http.put(f"/api/v1/studio/orgs/{org}/budget", json={"suspended": False})
    assert _chat(client).choices[0].message.content == "one two"


def test_a_monthly_token_budget_runs_out(app: FastAPI, http: TestClient, admin_key: str) -> None:
    org = _org(http)
    answer = http.put(f"/api/v1/studio/orgs/{org}/budget", json={"monthly_token_limit": 12})
    assert answer.json()["monthly_token_limit"] == 12
    client, seen = _counting_client(http, admin_key, max_retries=0)
    first = _chat(client)  # 4 prompt + 2 completion tokens
    assert first.usage is not None
    assert first.usage.total_tokens == 6
    _chat(client)  # 12 used: the budget is spent after this one (checked before each call)
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client)
    assert caught.value.code == "insufficient_quota"
    runtime: StudioRuntime = app.state.studio
    runtime.usage.flush()  # what the background flusher (every 1 s) has not written yet
    budget = http.get(f"/api/v1/studio/orgs/{org}/budget").json()
    assert (budget["used_this_month"], budget["monthly_token_limit"]) == (12, 12)
    # Still refused when the count comes from the database instead of this process.
    with pytest.raises(openai.RateLimitError):
        _chat(client)
    http.put(f"/api/v1/studio/orgs/{org}/budget", json={"monthly_token_limit": 100})
    assert _chat(client).usage is not None
    assert [p for p in seen if p.startswith("/v1/")] == ["/v1/chat/completions"] * 5


def test_a_key_override_limits_that_key_and_answers_rate_limit_exceeded(
    http: TestClient, admin_key: str
) -> None:
    key = _key(http)
    got = http.get(f"/api/v1/studio/keys/{key}/limits").json()
    assert (got["requests_per_minute"], got["effective_requests_per_minute"]) == (None, 600)
    answer = http.put(f"/api/v1/studio/keys/{key}/limits", json={"requests_per_minute": 2})
    assert answer.status_code == 200
    assert answer.json()["effective_requests_per_minute"] == 2
    assert answer.json()["effective_tokens_per_minute"] == 1_000_000
    client, _ = _counting_client(http, admin_key, max_retries=0)
    _chat(client)
    _chat(client)
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in caught.value.response.headers


def test_bad_settings_are_refused_and_change_nothing(http: TestClient) -> None:
    org, key = _org(http), _key(http)
    bad = http.put(f"/api/v1/studio/keys/{key}/limits", json={"requests_per_minute": 0})
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "requests_per_minute"
    assert http.get(f"/api/v1/studio/keys/{key}/limits").json()["requests_per_minute"] is None
    bad = http.put(f"/api/v1/studio/orgs/{org}/budget", json={"monthly_token_limit": -1})
    assert bad.status_code == 422
    assert http.get(f"/api/v1/studio/orgs/{org}/budget").json()["monthly_token_limit"] is None
    missing = http.put("/api/v1/studio/orgs/org_nope/budget", json={"suspended": True})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "org_not_found"
    missing = http.get("/api/v1/studio/keys/key_nope/limits")
    assert missing.json()["error"]["code"] == "key_not_found"
