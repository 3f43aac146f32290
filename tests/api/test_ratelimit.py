"""Per-key rate limits on /api/v1: GitHub's headers, a 429 in the platform's shape with
Retry-After, per key, a separate write bucket, and one count across app instances with Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings

LIMIT = 8


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        key_touch_interval_s=0,
        api_requests_per_minute=LIMIT,
        api_writes_per_minute=3,
    )


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_call_past_the_limit_is_429_with_retry_after(http: TestClient, admin_key: str) -> None:
    first = http.get("/api/v1/me", headers=_auth(admin_key))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == str(LIMIT)
    assert first.headers["x-ratelimit-remaining"] == str(LIMIT - 1)
    assert first.headers["x-ratelimit-used"] == "1"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert int(first.headers["x-ratelimit-reset"]) > 0
    for n in range(2, LIMIT + 1):
        ok = http.get("/api/v1/me", headers=_auth(admin_key))
        assert ok.status_code == 200, n
    refused = http.get("/api/v1/me", headers=_auth(admin_key))
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert f"{LIMIT} requests per minute" in error["message"]
    # A minute holds LIMIT requests: one comes back every 60 / LIMIT s.
    assert 1 <= int(refused.headers["retry-after"]) <= 60 // LIMIT + 1
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-request-id"]
    # Another caller has a bucket of its own; the health check is never limited.
    assert http.get("/api/v1/me", headers=_auth("nck_someone-else")).status_code == 401
    assert http.get("/api/v1/me").status_code == 401
    assert http.get("/api/v1/health").status_code == 200
    assert "x-ratelimit-limit" not in http.get("/api/v1/health").headers


def test_another_key_is_unaffected(http: TestClient, admin_key: str) -> None:
    made = http.post("/api/v1/keys", json={"name": "second"}, headers=_auth(admin_key))
    assert made.status_code == 201, made.text
    second = made.json()["secret"]
    spent = [http.get("/api/v1/me", headers=_auth(admin_key)).status_code for _ in range(LIMIT)]
    assert spent[-1] == 429
    answer = http.get("/api/v1/me", headers=_auth(second))
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-remaining"] == str(LIMIT - 1)


def test_writes_have_a_smaller_bucket_of_their_own(http: TestClient, admin_key: str) -> None:
    for n in range(3):
        made = http.post("/api/v1/keys", json={"name": f"k{n}"}, headers=_auth(admin_key))
        assert made.status_code == 201, made.text
    refused = http.post("/api/v1/keys", json={"name": "one more"}, headers=_auth(admin_key))
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-resource"] == "write"
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert "3 writes per minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    # Reads still go (the request bucket has room).
    assert http.get("/api/v1/me", headers=_auth(admin_key)).status_code == 200


@pytest.fixture
def two_apps(
    redis_url: str, tmp_path: Path, db: Database, clock: VirtualClock
) -> Iterator[tuple[TestClient, TestClient]]:
    prefix = f"neocloud-test:{os.getpid()}:{secrets.token_hex(4)}:"
    shared = Settings(
        data_dir=tmp_path,
        key_touch_interval_s=0,
        api_requests_per_minute=LIMIT,
        redis_url=redis_url,
        api_redis_prefix=prefix,
    )
    one = create_app(settings=shared, db=db, clock=clock)
    two = create_app(settings=shared, db=db, clock=clock)
    with (
        TestClient(one, raise_server_exceptions=False) as a,
        TestClient(two, raise_server_exceptions=False) as b,
    ):
        yield a, b


def test_two_app_instances_share_the_count_through_redis(
    two_apps: tuple[TestClient, TestClient], admin_key: str
) -> None:
    a, b = two_apps
    statuses = [
        (a if n % 2 else b).get("/api/v1/me", headers=_auth(admin_key)).status_code
        for n in range(LIMIT)
    ]
    assert statuses == [200] * LIMIT
    assert a.get("/api/v1/me", headers=_auth(admin_key)).status_code == 429
    assert b.get("/api/v1/me", headers=_auth(admin_key)).status_code == 429
