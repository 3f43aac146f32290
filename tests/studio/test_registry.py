"""The operator's model registry: local checkpoints and upstreams registered at run time."""

from __future__ import annotations

import gc
import json
import shutil
import time
import weakref
from pathlib import Path

import httpx2
import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.fake import fake_catalog
from neocloud.studio.runtime import TINY_LLAMA, StudioRuntime
from neocloud.studio.tables import StudioModelRow

MODELS = "/api/v1/studio/models"
FREE = {"input_price_per_m": "0", "output_price_per_m": "0"}  # free on purpose: stated


def _fake_vllm(seen: list[dict[str, object]]) -> httpx2.MockTransport:
    """An OpenAI-compatible upstream that answers 'hi there' and counts 3 + 2 tokens."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), **body})
        message = {"role": "assistant", "content": "hi there"}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        out = {
            "id": "up-1",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }
        return httpx2.Response(200, json=out)

    return httpx2.MockTransport(handle)


@pytest.fixture
def seen() -> list[dict[str, object]]:
    return []


@pytest.fixture
def app(
    settings: Settings, db: Database, clock: VirtualClock, seen: list[dict[str, object]]
) -> FastAPI:
    app = create_app(settings=settings, db=db, clock=clock)
    runtime: StudioRuntime = app.state.studio
    runtime.catalog = fake_catalog()
    runtime.models.upstream_client = lambda: httpx2.AsyncClient(transport=_fake_vllm(seen))
    return app


def _oai(http: TestClient, admin_key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
    )


def _rows(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.scalars(sa.select(StudioModelRow.id).order_by(StudioModelRow.id)))


def test_upstream_registration_is_served_balanced_and_removed(
    http: TestClient, admin_key: str, db: Database, seen: list[dict[str, object]]
) -> None:
    body = {
        "id": "acme/llama-3-8b",
        "upstream_urls": ["http://10.0.0.5:8000/v1/", "http://10.0.0.6:8000/v1"],
        "upstream_model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "input_price_per_m": "0.10",
        "output_price_per_m": "0.30",
    }
    created = http.post(MODELS, json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["source"] == "upstream"
    assert out["engine"] == "upstream:acme/llama-3-8b"
    assert out["upstream_urls"] == ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
    assert out["context_length"] == 8192
    assert out["pricing"] == {"input_per_m_tokens": "0.1", "output_per_m_tokens": "0.3"}
    assert out["servable"] is True

    oai = _oai(http, admin_key)
    assert "acme/llama-3-8b" in {m.id for m in oai.models.list()}
    for _ in range(2):
        answer = oai.chat.completions.create(
            model="acme/llama-3-8b", messages=[{"role": "user", "content": "hello"}]
        )
        assert answer.choices[0].message.content == "hi there"
        assert answer.model == "acme/llama-3-8b"
    assert [s["model"] for s in seen] == ["meta-llama/Meta-Llama-3-8B-Instruct"] * 2
    assert {str(s["url"]).split("/v1")[0] for s in seen} <= {
        "http://10.0.0.5:8000",
        "http://10.0.0.6:8000",
    }

    listing = http.get(MODELS).json()["data"]
    by_id = {m["id"]: m for m in listing}
    assert by_id["neocloud/echo"]["source"] == "builtin"
    assert by_id["neocloud/echo"]["engine"] == "echo"
    assert by_id["acme/llama-3-8b"]["upstream_model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert http.get(f"{MODELS}/acme/llama-3-8b").json()["source"] == "upstream"

    assert http.post(MODELS, json=body).json()["error"]["code"] == "model_exists"
    deleted = http.delete(f"{MODELS}/acme/llama-3-8b")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": "acme/llama-3-8b", "object": "studio.model", "deleted": True}
    assert "acme/llama-3-8b" not in {m.id for m in oai.models.list()}
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(
            model="acme/llama-3-8b", messages=[{"role": "user", "content": "hello"}]
        )
    assert missing.value.code == "model_not_found"
    assert http.delete(f"{MODELS}/acme/llama-3-8b").status_code == 404
    builtin = http.delete(f"{MODELS}/neocloud/echo")
    assert builtin.status_code == 409
    assert builtin.json()["error"]["code"] == "model_builtin"
    assert _rows(db) == []


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"id": "x", "path": "/nonexistent/dir"}, 422, "invalid_model_path", "path"),
        ({"id": "x", "path": "<tmp>"}, 422, "invalid_model_path", "path"),
        ({"id": "x", "upstream_urls": ["ftp://a/v1"]}, 422, "invalid_upstream_url", None),
        ({"id": "x", "upstream_urls": ["http:///v1"]}, 422, "invalid_upstream_url", None),
        ({"id": "x"}, 422, "model_source_required", "path"),
        (
            {"id": "x", "path": str(TINY_LLAMA), "upstream_urls": ["http://a/v1"]},
            422,
            "model_source_required",
            "path",
        ),
        ({"id": "-bad id", "upstream_urls": ["http://a/v1"]}, 422, "invalid_model_id", "id"),
        ({"id": "neocloud/echo", "upstream_urls": ["http://a/v1"]}, 409, "model_exists", "id"),
        (
            {"id": "x", "path": str(TINY_LLAMA), "context_length": 100_000},
            422,
            "invalid_context_length",
            "context_length",
        ),
        (
            {"id": "x", "upstream_urls": ["http://a/v1"], "input_price_per_m": "-1"},
            422,
            "invalid_price",
            "input_price_per_m",
        ),
        # A registration states its prices: none is not $0.
        ({"id": "x", "upstream_urls": ["http://a/v1"]}, 422, "price_required", "input_price_per_m"),
        ({"id": "x", "path": str(TINY_LLAMA)}, 422, "price_required", "input_price_per_m"),
        (
            {"id": "x", "upstream_urls": ["http://a/v1"], "input_price_per_m": "0.1"},
            422,
            "price_required",
            "output_price_per_m",
        ),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(
    http: TestClient,
    db: Database,
    tmp_path: Path,
    body: dict[str, object],
    status: int,
    code: str,
    param: str | None,
) -> None:
    if body.get("path") == "<tmp>":
        body = {**body, "path": str(tmp_path)}  # a directory without config.json
    response = http.post(MODELS, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"] == "upstream_urls.0"
    assert _rows(db) == []
    assert set(http.app.state.studio.catalog.models) == {  # type: ignore[attr-defined]
        "neocloud/echo",
        "neocloud/hash-embed",
    }


def test_a_registration_without_prices_says_how_to_serve_it_free(
    http: TestClient, admin_key: str, db: Database
) -> None:
    """No prices is a 422 that names the price and says how to make it free on purpose; an
    explicit 0 registers a free model; the built-in models keep their catalog prices."""
    body: dict[str, object] = {"id": "acme/free", "upstream_urls": ["http://a/v1"]}
    refused = http.post(MODELS, json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "price_required",
        "input_price_per_m",
    )
    assert "give 0 explicitly" in error["message"]
    assert "--input-price" in error["message"]
    assert _rows(db) == []

    created = http.post(MODELS, json={**body, **FREE})
    assert created.status_code == 201, created.text
    assert created.json()["pricing"] == {"input_per_m_tokens": "0", "output_per_m_tokens": "0"}
    assert _rows(db) == ["acme/free"]
    echo = http.get(f"{MODELS}/neocloud/echo").json()
    assert echo["source"] == "builtin"
    assert echo["pricing"] == {"input_per_m_tokens": "0.01", "output_per_m_tokens": "0.02"}


def test_only_operator_admins_register(http: TestClient, db: Database) -> None:
    viewer = http.post("/api/v1/keys", json={"name": "ro", "role": "viewer"})
    assert viewer.status_code == 201, viewer.text
    headers = {"Authorization": f"Bearer {viewer.json()['secret']}"}
    body = {"id": "x", "upstream_urls": ["http://a/v1"], **FREE}
    refused = http.post(MODELS, json=body, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "operator_admin_only"
    assert http.post(MODELS, json=body).status_code == 201
    assert http.delete(f"{MODELS}/x", headers=headers).status_code == 403
    assert _rows(db) == ["x"]


def test_another_process_picks_up_a_registration_on_sync(
    settings: Settings, db: Database, clock: VirtualClock, http: TestClient
) -> None:
    """A second app on the same database (another server process) sees the change when it
    syncs: at start, and then on its poll."""
    other = create_app(settings=settings, db=db, clock=clock)
    runtime: StudioRuntime = other.state.studio
    runtime.catalog = fake_catalog()
    runtime.models.sync()
    assert "acme/up" not in runtime.catalog.models
    body = {"id": "acme/up", "upstream_urls": ["http://a/v1"], "context_length": 4096, **FREE}
    assert http.post(MODELS, json=body).status_code == 201
    runtime.models.sync()
    assert runtime.catalog.models["acme/up"].context_length == 4096
    assert "upstream:acme/up" in runtime.catalog.upstreams
    assert http.delete(f"{MODELS}/acme/up").status_code == 200
    runtime.models.sync()
    assert "acme/up" not in runtime.catalog.models
    assert "upstream:acme/up" not in runtime.catalog.upstreams


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_local_checkpoint_is_served_under_its_own_id(http: TestClient, admin_key: str) -> None:
    pytest.importorskip("torch")
    from neocloud.studio.engines.hf import HFTextEngine

    body = {
        "id": "acme/tiny",
        "path": str(TINY_LLAMA),
        "input_price_per_m": "0.5",
        "output_price_per_m": "1.5",
    }
    created = http.post(MODELS, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["context_length"] == 512  # the checkpoint's max_position_embeddings
    assert created.json()["engine"] == "path:acme/tiny"
    assert created.json()["path"] == str(TINY_LLAMA.resolve())
    oai = _oai(http, admin_key)
    models = {m.id: m for m in oai.models.list()}
    assert "acme/tiny" in models
    answer = oai.chat.completions.create(
        model="acme/tiny",
        messages=[{"role": "user", "content": "What does the cow say?"}],
        temperature=0,
    )
    assert answer.choices[0].message.content == "The cow says moo."
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0

    runtime: StudioRuntime = http.app.state.studio  # type: ignore[attr-defined]
    engine = runtime.catalog.text_engines["path:acme/tiny"]
    assert isinstance(engine, HFTextEngine)
    assert engine.scheduler.running
    assert http.delete(f"{MODELS}/acme/tiny").status_code == 200
    deadline = time.monotonic() + 10
    while engine.scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.scheduler.running  # the removed model's scheduler thread has ended
    assert "acme/tiny" not in {m.id for m in oai.models.list()}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_removed_checkpoint_frees_its_weights(
    http: TestClient, admin_key: str, tmp_path: Path
) -> None:
    """Removing a model gives its weights and KV cache back (they stayed until restart)."""
    pytest.importorskip("torch")
    from neocloud.studio.engines.hf import HFTextEngine

    checkpoint = tmp_path / "copy"  # its own path: no other test's engine shares these weights
    shutil.copytree(TINY_LLAMA, checkpoint)
    body = {
        "id": "acme/gone",
        "path": str(checkpoint),
        "input_price_per_m": "1",
        "output_price_per_m": "0",
    }
    assert http.post(MODELS, json=body).status_code == 201
    answer = _oai(http, admin_key).chat.completions.create(
        model="acme/gone", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    runtime: StudioRuntime = http.app.state.studio  # type: ignore[attr-defined]
    engine = runtime.catalog.text_engines["path:acme/gone"]
    assert isinstance(engine, HFTextEngine)
    weights = weakref.ref(engine.loaded.model)
    assert engine.scheduler.decoder is not None  # the KV cache lives while it serves
    assert http.delete(f"{MODELS}/acme/gone").status_code == 200
    deadline = time.monotonic() + 10
    while engine.scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.scheduler.decoder is None  # the scheduler let go of its KV cache
    del engine
    gc.collect()
    assert weights() is None  # nothing holds the removed model's weights any more
