"""Lists in request bodies have a documented maximum (issue 13, "bounded request sizes and
counts everywhere"): one past it is a precise 422 naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from neocloud.api.economics import MAX_STRESSES


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_projection_takes_at_most_max_stresses(http: TestClient, admin_key: str) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    body = {"scenario": {}, "stresses": ["rate_shock"] * (MAX_STRESSES + 1)}
    answer = http.post("/api/v1/economics/projections", json=body, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == "stresses"
    long_name = {"scenario": {}, "stresses": ["x" * 65]}
    answer = http.post("/api/v1/economics/projections", json=long_name, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == "stresses[0]"
    schema = http.get("/api/v1/openapi.json").json()["components"]["schemas"]["ProjectionIn"]
    assert schema["properties"]["stresses"]["maxItems"] == MAX_STRESSES
