"""The API's shared conventions: health, error shapes, body bounds, idempotency, OpenAPI."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client


def test_health_answers_without_a_key(http: TestClient) -> None:
    response = http.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["x-request-id"]


def test_unknown_route_has_the_error_shape(http: TestClient) -> None:
    response = http.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) >= {"type", "code", "message", "param"}
    assert error["type"] == "not_found_error"


def test_missing_and_bad_keys_are_401(http: TestClient, admin_key: str) -> None:
    missing = http.get("/api/v1/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.json()["error"]["code"] == "missing_api_key"
    bad = http.get("/api/v1/me", headers={"Authorization": "Bearer nck_not-a-real-key"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"
    basic = http.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    ok = http.get("/api/v1/me", headers={"Authorization": f"Bearer {admin_key}"})
    assert ok.status_code == 200


def test_request_id_is_echoed(http: TestClient) -> None:
    response = http.get("/api/v1/health", headers={"X-Request-Id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"


def test_oversized_body_is_413_and_changes_nothing(
    http: TestClient, admin_key: str, admin: Client
) -> None:
    before = len(list(admin.iter("orgs")))
    huge = '{"name": "' + "x" * (9 * 1024 * 1024) + '"}'
    response = http.post(
        "/api/v1/orgs",
        content=huge,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert len(list(admin.iter("orgs"))) == before


def test_unknown_fields_are_rejected_naming_the_field(admin: Client) -> None:
    with pytest.raises(ApiError) as caught:
        admin.post("orgs", {"name": "Acme", "colour": "blue"})
    assert caught.value.status == 422
    assert caught.value.code == "unknown_field"
    assert caught.value.param == "colour"


def test_idempotent_create_replays_and_refuses_a_different_body(admin: Client) -> None:
    first = admin.post("orgs", {"name": "Replay Co"}, idempotency_key="k-1")
    again = admin.post("orgs", {"name": "Replay Co"}, idempotency_key="k-1")
    assert again["id"] == first["id"]
    assert sum(1 for o in admin.iter("orgs") if o["name"] == "Replay Co") == 1
    with pytest.raises(ApiError) as caught:
        admin.post("orgs", {"name": "Other Co"}, idempotency_key="k-1")
    assert caught.value.status == 409
    assert caught.value.code == "idempotency_key_reused"


def test_idempotent_replay_is_marked(http: TestClient, admin_key: str) -> None:
    headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": "k-2"}
    first = http.post("/api/v1/orgs", json={"name": "Marked"}, headers=headers)
    second = http.post("/api/v1/orgs", json={"name": "Marked"}, headers=headers)
    assert first.status_code in (200, 201)
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers


def test_failed_request_is_not_stored_so_a_fixed_retry_runs(admin: Client) -> None:
    with pytest.raises(ApiError) as caught:
        admin.post("orgs", {"name": ""}, idempotency_key="k-3")
    assert caught.value.status == 422
    # 4xx validation answers are final for that body; a different body needs a new key.
    created = admin.post("orgs", {"name": "Fixed"}, idempotency_key="k-4")
    assert created["name"] == "Fixed"


def test_limit_is_bounded(admin: Client) -> None:
    with pytest.raises(ApiError) as caught:
        admin.get("orgs", limit=100000)
    assert caught.value.param == "limit"


def test_openapi_document_lists_the_api(http: TestClient) -> None:
    doc = http.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for path in ("/api/v1/health", "/api/v1/nodes", "/api/v1/orgs", "/api/v1/keys"):
        assert path in paths, path
    assert doc["components"]["securitySchemes"], "Bearer auth is declared"
