"""The OpenAPI document tells the truth: what /v1 answers is documented in OpenAI's shapes, every
status a route answers is listed with the error shape, paging bounds are documented and a 405
names every method the path serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings


@pytest.fixture
def document(http: TestClient) -> dict[str, Any]:
    response = http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _ref_name(media: dict[str, Any]) -> str:
    return str(media["schema"]["$ref"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("get", "/v1/models", "ModelListOut"),
        ("get", "/v1/models/{model_id}", "ModelOut"),
        ("post", "/v1/chat/completions", "ChatCompletionOut"),
        ("post", "/v1/completions", "CompletionOut"),
        ("post", "/v1/embeddings", "EmbeddingListOut"),
    ],
)
def test_v1_responses_are_documented(
    document: dict[str, Any], method: str, path: str, shape: str
) -> None:
    operation = document["paths"][path][method]
    ok = operation["responses"]["200"]["content"]
    assert _ref_name(ok["application/json"]) == shape
    for status in ("400", "401", "404", "413", "429", "500"):
        error = operation["responses"][status]["content"]["application/json"]
        assert _ref_name(error) == "ErrorOut"
    if method == "post":
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "model" in body["required"]
        assert "$ref" not in str(body)  # inlined: the document has no $defs to point into


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_streaming_is_documented_as_server_sent_events(document: dict[str, Any], path: str) -> None:
    content = document["paths"][path]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in content


def test_every_api_route_lists_the_statuses_it_can_answer(document: dict[str, Any]) -> None:
    missing = []
    for path, item in document["paths"].items():
        if path == "/api/v1/health" or not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            listed = set(operation["responses"])
            for status in ("400", "401", "413", "422", "429", "500"):
                if status not in listed:
                    missing.append(f"{method.upper()} {path} {status}")
    assert not missing


def test_limit_has_its_documented_maximum(
    document: dict[str, Any], http: TestClient, admin_key: str
) -> None:
    params = {p["name"]: p for p in document["paths"]["/api/v1/orgs"]["get"]["parameters"]}
    limit = params["limit"]["schema"]["anyOf"][0]
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)
    assert "next_cursor" in params["after"]["description"]
    too_many = http.get(
        "/api/v1/orgs", params={"limit": 1001}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert too_many.status_code == 422  # the status the document lists for a bad value
    assert too_many.json()["error"]["param"] == "limit"


def test_an_operator_page_bound_below_1000_is_a_422_too(
    db: Database, clock: VirtualClock, tmp_path: Path, admin_key: str
) -> None:
    settings = Settings(data_dir=tmp_path, page_limit_max=10)
    with TestClient(create_app(settings=settings, db=db, clock=clock)) as http:
        response = http.get(
            "/api/v1/orgs", params={"limit": 11}, headers={"Authorization": f"Bearer {admin_key}"}
        )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "code": "limit_too_large",
        "message": "limit must be at most 10",
        "param": "limit",
    }


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/orgs", "GET, POST"),
        ("PUT", "/api/v1/orgs/org_x", "GET, PATCH"),
        ("PATCH", "/api/v1/studio/models/a/b", "GET, DELETE"),
        ("GET", "/v1/chat/completions", "POST"),
        ("POST", "/api/v1/health", "GET"),
    ],
)
def test_405_names_every_method_of_the_path(
    http: TestClient, method: str, path: str, allowed: str
) -> None:
    response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"] == f"{method} is not allowed on {path}; allowed: {allowed}"


def test_an_undecodable_body_is_a_documented_400(http: TestClient, admin_key: str) -> None:
    response = http.post(
        "/api/v1/orgs",
        content=b"\xcd\x018",
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_json",
        "message": "the body must be valid JSON in UTF-8",
        "param": None,
    }
