"""Every bad value a careless or hostile client sends gets a precise 4xx, never a 500 or a store.

Table-driven (issue 13, findings 7 and 8): each row posts one bad value to one endpoint over HTTP
and checks the status, the error code and the ``param`` it names, on SQLite and PostgreSQL. The
platform API answers in its shape (422 ``invalid_value`` naming the field); ``/v1`` answers in
OpenAI's (400 ``invalid_request_error``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.fake import fake_catalog

BEFORE_YEAR_1 = "0001-01-01T00:00:00+05:00"  # UTC would be in year 0
AFTER_9999 = "9999-12-31T23:00:00-05:00"  # UTC would be in year 10000
BAD_TIMES = [BEFORE_YEAR_1, AFTER_9999, "9999-12-31"]
NOW = "2026-03-01T12:00:00Z"  # the clock fixture's time


@pytest.fixture
def app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()  # /v1 serves without loading weights
    return app


@dataclass
class World:
    http: TestClient
    org_id: str
    key_id: str


@pytest.fixture
def world(app: FastAPI, admin_key: str) -> Iterator[World]:
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        org = http.post("/api/v1/orgs", json={"name": "acme", "owner_email": "o@acme.example"})
        assert org.status_code == 201, org.text
        keys = http.get("/api/v1/keys").json()["data"]
        yield World(http, org.json()["id"], keys[0]["id"])


def _call(w: World, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    path = path.replace("{org}", w.org_id).replace("{key}", w.key_id)
    return w.http.request(method, path, json=body, **kw)


def _usage(time: str = NOW, **data: Any) -> dict[str, Any]:
    event = {"id": "e1", "source": "app", "type": "tokens", "subject": "m", "time": time}
    return {"events": [{**event, "data": data}]}


def _offerings(**change: Any) -> dict[str, Any]:
    return {"gpu_model": "H100", "node_count": 1, "duration_hours": 24, **change}


def _contract(**change: Any) -> dict[str, Any]:
    body = {"kind": "commit_spend", "start_at": NOW, "end_at": "2027-03-01T00:00:00Z"}
    return {**body, "amount": "10", **change}


def _credit(**change: Any) -> dict[str, Any]:
    return {"amount": "5.00", **change}


def _book(**change: Any) -> dict[str, Any]:
    return {"effective_from": "2026-04-01T00:00:00Z", **change}


NUL = "a\u0000b"
# (method, path, body, param): each answers 422 invalid_value naming param, on /api/v1.
PLATFORM_ROWS: list[tuple[str, str, Any, str]] = [
    # Times whose offset leaves the representable range, and a window past it.
    *[("POST", "/api/v1/usage/events?org_id={org}", _usage(t), "events[0].time")
      for t in BAD_TIMES],
    *[("POST", "/api/v1/reservations/offerings", _offerings(start_after=t), "start_after")
      for t in BAD_TIMES],
    ("POST", "/api/v1/reservations/offerings", _offerings(start_before=AFTER_9999), "start_before"),
    *[("POST", "/api/v1/credits", _credit(org_id="{org}", expires_at=t), "expires_at")
      for t in BAD_TIMES],
    *[("POST", "/api/v1/contracts", _contract(org_id="{org}", start_at=t), "start_at")
      for t in BAD_TIMES],
    ("POST", "/api/v1/contracts", _contract(org_id="{org}", end_at=AFTER_9999), "end_at"),
    *[("POST", "/api/v1/price-books", _book(effective_from=t), "effective_from")
      for t in BAD_TIMES],
    *[("POST", "/api/v1/keys", {"name": "k", "expires_at": t}, "expires_at") for t in BAD_TIMES],
    # Integers at or past 2^63, and JSON false where a number belongs.
    ("POST", "/api/v1/credits", _credit(org_id="{org}", priority=2**63), "priority"),
    ("POST", "/api/v1/credits", _credit(org_id="{org}", priority=True), "priority"),
    ("POST", "/api/v1/contracts", _contract(org_id="{org}", kind="commit_capacity", gpus=2**63),
     "gpus"),
    ("PUT", "/api/v1/studio/keys/{key}/limits", {"requests_per_minute": 2**63},
     "requests_per_minute"),
    ("PUT", "/api/v1/studio/keys/{key}/limits", {"tokens_per_minute": 2**64}, "tokens_per_minute"),
    ("PUT", "/api/v1/studio/orgs/{org}/budget", {"monthly_token_limit": 2**63},
     "monthly_token_limit"),
    ("PUT", "/api/v1/studio/orgs/{org}/budget", {"monthly_token_limit": False},
     "monthly_token_limit"),
    ("PUT", "/api/v1/orgs/{org}/quotas/H100", {"limit_gpus": False}, "limit_gpus"),
    ("PUT", "/api/v1/quota-defaults/H100", {"limit_gpus": 2**63}, "limit_gpus"),
    ("POST", "/api/v1/reservations/offerings", _offerings(node_count=10**23), "node_count"),
    ("POST", "/api/v1/reservations/offerings", _offerings(duration_hours=2**63), "duration_hours"),
    ("POST", "/api/v1/clusters", {"gpu_model": "H100", "node_count": 2**63}, "node_count"),
    ("POST", "/api/v1/instances", {"instance_type": "1xH100", "max_wait_s": 2**63}, "max_wait_s"),
    ("POST", "/api/v1/usage/events?org_id={org}", _usage(input_tokens=10**35),
     "events[0].data.input_tokens"),
    ("POST", "/api/v1/usage/events?org_id={org}", _usage(output_tokens=10**12 + 1),
     "events[0].data.output_tokens"),
    # Money past its bound, more places than are stored, currencies nobody invoices in.
    ("POST", "/api/v1/credits", _credit(org_id="{org}", amount="1e30"), "amount"),
    ("POST", "/api/v1/credits", _credit(org_id="{org}", amount="0.0000001"), "amount"),
    ("POST", "/api/v1/credits", _credit(org_id="{org}", currency="ZZZ"), "currency"),
    ("POST", "/api/v1/credits", _credit(org_id="{org}", currency="EUR"), "currency"),
    ("POST", "/api/v1/contracts", _contract(org_id="{org}", amount=1e30), "amount"),
    ("POST", "/api/v1/contracts", _contract(org_id="{org}", currency="XYZ"), "currency"),
    ("POST", "/api/v1/price-books", _book(gpu_prices={"H100-SXM-80GB.on_demand": "1e30"}),
     "gpu_prices.H100-SXM-80GB.on_demand"),
    ("POST", "/api/v1/price-books",
     _book(token_prices={"m": {"input_per_1m": "1e20", "output_per_1m": "1"}}),
     "token_prices.m.input_per_1m"),
    ("POST", "/api/v1/price-books", _book(currency="usd"), "currency"),
    # Control characters in names, emails and URLs; unbounded lists and entries.
    ("POST", "/api/v1/orgs", {"name": NUL}, "name"),
    ("PATCH", "/api/v1/orgs/{org}", {"name": "a\u001bb"}, "name"),
    ("POST", "/api/v1/orgs/{org}/projects", {"name": NUL}, "name"),
    ("POST", "/api/v1/orgs/{org}/projects", {"name": "p", "description": NUL}, "description"),
    ("POST", "/api/v1/orgs/{org}/users", {"email": "a\u0000b@ex.com"}, "email"),
    ("POST", "/api/v1/orgs/{org}/users", {"email": "u@ex.com", "name": NUL}, "name"),
    ("POST", "/api/v1/keys", {"name": NUL}, "name"),
    ("POST", "/api/v1/instances", {"instance_type": "1xH100", "name": NUL}, "name"),
    ("POST", "/api/v1/instances", {"instance_type": "1xH100", "ssh_keys": ["k" * 20_000]},
     "ssh_keys[0]"),
    ("POST", "/api/v1/instances", {"instance_type": "1xH100", "ssh_keys": ["k"] * 21},
     "ssh_keys"),
    ("POST", "/api/v1/clusters", {"gpu_model": "H100", "node_count": 1, "name": NUL}, "name"),
    ("POST", "/api/v1/studio/models",
     {"id": "x", "upstream_urls": ["http://a\u0000b/v1"], "input_price_per_m": "1",
      "output_price_per_m": "1"}, "upstream_urls[0]"),
    ("POST", "/api/v1/studio/models",
     {"id": NUL, "upstream_urls": ["http://a/v1"], "input_price_per_m": "1",
      "output_price_per_m": "1"}, "id"),
    ("POST", "/api/v1/credits", _credit(org_id="{org}", note=NUL), "note"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "param"), PLATFORM_ROWS)
def test_platform_refuses_bad_values_naming_the_param(
    world: World, db: Database, method: str, path: str, body: Any, param: str
) -> None:
    counts = _counts(db)
    body = _with_org(body, world.org_id)
    r = _call(world, method, path, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        param,
    ), r.text
    assert _counts(db) == counts  # nothing was stored


def _with_org(body: Any, org_id: str) -> Any:
    if isinstance(body, dict) and body.get("org_id") == "{org}":
        return {**body, "org_id": org_id}
    return body


def _counts(db: Database) -> dict[str, int]:
    tables = (
        *("orgs", "projects", "users", "api_keys", "quotas", "quota_defaults", "instances"),
        *("clusters", "offerings", "usage_events", "price_books", "billing_contracts"),
        *("credit_grants", "studio_models", "studio_key_limits", "studio_org_budgets"),
    )
    present = set(sa.inspect(db.engine).get_table_names())
    with db.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
            for t in tables
            if t in present
        }


@pytest.mark.parametrize("since", [BEFORE_YEAR_1, AFTER_9999])
def test_audit_events_since_out_of_range_is_a_422(world: World, since: str) -> None:
    r = world.http.get("/api/v1/audit-events", params={"since": since})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_value", "since")


@pytest.mark.parametrize("start", [BEFORE_YEAR_1, AFTER_9999])
def test_studio_usage_start_time_out_of_range_is_refused(world: World, start: str) -> None:
    r = world.http.get("/api/v1/studio/usage", params={"start_time": start})
    # The usage query answers its other bad values with 400 too (studio/usage.py).
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (
        "invalid_value",
        "start_time",
    )


def test_a_key_expiry_without_an_offset_is_read_as_utc(world: World) -> None:
    r = world.http.post("/api/v1/keys", json={"name": "k", "expires_at": "2026-06-01T00:00:00"})
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] == "2026-06-01T00:00:00Z"
    past = world.http.post("/api/v1/keys", json={"name": "k", "expires_at": "2026-01-01T00:00"})
    assert past.status_code == 422, past.text
    assert past.json()["error"]["code"] == "expires_at_in_past"


def test_names_keep_unicode_and_tabs_stay_out(world: World) -> None:
    ok = world.http.post("/api/v1/orgs", json={"name": "  Zürich 日本  "})
    assert (ok.status_code, ok.json()["name"]) == (201, "Zürich 日本")
    tab = world.http.post("/api/v1/orgs", json={"name": "a\tb"})
    assert (tab.status_code, tab.json()["error"]["param"]) == (422, "name")


def test_bounds_show_in_the_openapi_document(world: World) -> None:
    doc = world.http.get("/api/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    credit = schemas["CreditGrantCreate"]["properties"]
    assert credit["priority"]["maximum"] == 1_000_000
    assert credit["currency"]["pattern"] == "^(USD)$"
    assert schemas["PriceBookCreate"]["properties"]["currency"]["enum"] == ["USD"]
    assert {"type": "number", "minimum": -(10**12), "maximum": 10**12} in credit["amount"]["anyOf"]
    assert "pattern" in credit["expires_at"]["anyOf"][0]
    org = schemas["OrgCreate"]["properties"]["name"]
    assert (org["maxLength"], org["pattern"]) == (200, r"^[^\x00-\x1f\x7f-\x9f]*$")
    quota = schemas["QuotaSet"]["properties"]["limit_gpus"]
    assert quota["maximum"] == 1_000_000


@pytest.mark.parametrize(
    "yaml_text", ["version: 1\x07\n", "version: 1\ntemplates: {a\x00: {}}\n", "\x1b[31m: x\n"]
)
def test_fleet_import_with_a_control_character_is_a_422(world: World, yaml_text: str) -> None:
    for body, ctype in (
        (yaml_text.encode(), "application/yaml"),
        (_json({"spec": yaml_text}), "application/json"),
    ):
        r = world.http.post("/api/v1/fleet/imports", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_yaml", r.text


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


# ------------------------------------------------------------------------------------- /v1

V1 = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
CHAT = {"model": "neocloud/echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, 10**30])
@pytest.mark.parametrize("stream", [False, True])
def test_v1_seed_past_64_bits_is_a_400_in_openais_shape(
    world: World, seed: int, stream: bool
) -> None:
    r = world.http.post("/v1/chat/completions", json={**CHAT, "seed": seed, "stream": stream})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        "seed",
    )


def test_v1_seed_at_the_64_bit_edges_is_served(world: World) -> None:
    for seed in (2**63 - 1, -(2**63)):
        r = world.http.post("/v1/chat/completions", json={**CHAT, "seed": seed})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", V1)
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_v1_deeply_nested_json_is_a_400(world: World, path: str, opener: bytes) -> None:
    body = opener * 5000
    r = world.http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "json_too_deep")


def test_v1_nesting_inside_an_ignored_field_is_bounded_too(world: World) -> None:
    body = _json(CHAT)[:-1] + b', "metadata": ' + b"[" * 900 + b"]" * 900 + b"}"
    r = world.http.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "json_too_deep"
    strings = _json({**CHAT, "user": "[" * 5000})  # brackets inside a string are text
    assert world.http.post("/v1/chat/completions", content=strings).status_code == 200


def test_platform_api_deep_nesting_stays_a_4xx(world: World) -> None:
    r = world.http.post(
        "/api/v1/orgs", content=b"[" * 5000, headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
