"""Key powers (issue 13, finding 5): a key never does more than its cap, no one acts as a
higher-ranked member, viewers make no keys and spend nothing on ``/v1``, a key may revoke itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.fake import fake_catalog
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.runtime import StudioRuntime
from tenancy.helpers import Tenant, add_member, client_for, make_tenant


def _another(admin: Client, tenant: Tenant, role: str, name: str) -> Tenant:
    org = tenant.org
    user = admin.users.add(org["id"], f"{name}@{org['slug']}.example", role=role)
    key = admin.keys.create(f"{name} key", org_id=org["id"], user_id=user["id"])
    return Tenant(org, user, key, client_for(admin, key["secret"]))


def _refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_viewer_capped_key_cannot_revoke_its_users_stronger_keys(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    viewer = client_for(admin, acme.client.keys.create("read only", role="viewer")["secret"])
    error = _refused(viewer.keys.revoke, acme.key["id"])
    assert (error.status, error.code) == (403, "insufficient_role")
    assert acme.client.get("me")["role"] == "owner"  # the owner's key still works


def test_a_capped_key_revokes_its_users_keys_up_to_its_cap_only(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    member_key = acme.client.keys.create("member", role="member")
    other_member_key = acme.client.keys.create("member 2", role="member")
    member = client_for(admin, member_key["secret"])
    assert _refused(member.keys.revoke, acme.key["id"]).status == 403
    assert member.keys.revoke(other_member_key["id"])["revoked_at"] is not None


def test_every_key_may_revoke_itself(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    key = acme.client.keys.create("read only", role="viewer")
    viewer = client_for(admin, key["secret"])
    assert viewer.keys.revoke(key["id"])["revoked_at"] is not None
    assert _refused(viewer.get, "me").status == 401
    # A viewer by membership, too.
    looker = add_member(admin, acme, "viewer")
    assert looker.client.keys.revoke(looker.key["id"])["revoked_at"] is not None


def test_viewers_make_no_keys(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    looker = add_member(admin, acme, "viewer")
    error = _refused(looker.client.keys.create, "mine")
    assert (error.status, error.code) == (403, "insufficient_role")
    capped = client_for(admin, acme.client.keys.create("ro", role="viewer")["secret"])
    assert _refused(capped.keys.create, "mine", role="viewer").status == 403
    assert [k["name"] for k in acme.client.keys.list()["data"]] == ["owner key", "ro"]


def test_an_admin_cannot_act_as_the_owner(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    boss = add_member(admin, acme, "admin")
    # No key in the owner's name, capped or not, and no revoking the owner's keys.
    for role in (None, "viewer"):
        error = _refused(boss.client.keys.create, "as owner", user_id=acme.user["id"], role=role)
        assert (error.status, error.code, error.param) == (403, "insufficient_role", "user_id")
    error = _refused(boss.client.keys.revoke, acme.key["id"])
    assert (error.status, error.code) == (403, "insufficient_role")
    assert acme.client.get("me")["role"] == "owner"
    # Members of the admin's rank and below are the admin's to manage.
    peer = _another(admin, acme, "admin", "peer")
    worker = add_member(admin, acme, "member")
    for holder in (peer, worker):
        made = boss.client.keys.create("ci", user_id=holder.user["id"])
        assert made["user_id"] == holder.user["id"]
        assert boss.client.keys.revoke(made["id"])["revoked_at"] is not None
    assert boss.client.keys.revoke(worker.key["id"])["revoked_at"] is not None
    # The owner may act for anyone in the org.
    assert acme.client.keys.revoke(boss.key["id"])["revoked_at"] is not None


def test_a_capped_admin_key_of_the_owner_is_an_admin(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    co_owner = _another(admin, acme, "owner", "co-owner")
    capped = client_for(admin, acme.client.keys.create("admin", role="admin")["secret"])
    assert _refused(capped.keys.revoke, co_owner.key["id"]).status == 403
    assert _refused(capped.keys.create, "x", user_id=co_owner.user["id"]).status == 403


def test_the_operator_admin_acts_for_any_tenant_owner(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    made = admin.keys.create("onboarding", org_id=acme.org["id"], user_id=acme.user["id"])
    assert (made["user_id"], made["role"]) == (acme.user["id"], None)
    assert admin.keys.revoke(acme.key["id"])["revoked_at"] is not None
    assert admin.keys.revoke(made["id"])["revoked_at"] is not None


def test_operator_staff_revoke_no_tenant_keys(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    operator_org = admin.get("me")["org"]["id"]
    staff_user = admin.users.add(operator_org, "staff@operator.example", role="member")
    staff_key = admin.keys.create("staff", org_id=operator_org, user_id=staff_user["id"])
    staff = client_for(admin, staff_key["secret"])
    error = _refused(staff.keys.revoke, acme.key["id"])
    assert (error.status, error.code) == (403, "operator_admin_only")
    assert _refused(staff.keys.create, "x", org_id=acme.org["id"]).status == 403


# ------------------------------------------------------------------ viewers do not spend on /v1


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture
def studio_app(app: FastAPI) -> FastAPI:
    runtime: StudioRuntime = app.state.studio
    runtime.catalog = fake_catalog()

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":  # the pool's health probe
            return httpx2.Response(200, json={"object": "list", "data": []})
        body = json.loads(request.content)
        message = {"role": "assistant", "content": "hi"}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        return httpx2.Response(
            200,
            json={
                "id": "up-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            },
        )

    pool = UpstreamPool(
        "vllm-a",
        ["http://a.local/v1"],
        client=httpx2.AsyncClient(transport=httpx2.MockTransport(upstream)),
    )
    runtime.catalog.add_upstream(pool)
    runtime.catalog.add(
        CatalogModel("up/llama", "vllm-a", ModelKind.TEXT, 8192, Decimal("0.1"), Decimal("0.2"))
    )
    return app


def test_viewers_read_the_gateway_but_run_no_model(studio_app: FastAPI, admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    looker = add_member(admin, acme, "viewer")
    capped = acme.client.keys.create("ro", role="viewer")["secret"]
    member = add_member(admin, acme, "member")
    with TestClient(studio_app, raise_server_exceptions=False) as http:
        models = [
            m["id"]
            for m in http.get("/v1/models", headers=_auth(member.key["secret"])).json()["data"]
        ]
        text = next(m for m in models if m != "up/llama" and "embed" not in m)
        embed = next(m for m in models if "embed" in m)
        runs = [
            ("/v1/chat/completions", _chat(text)),
            ("/v1/chat/completions", _chat("up/llama")),  # the fast path's kind of request
            ("/v1/completions", {"model": text, "prompt": "hi", "max_tokens": 3}),
            ("/v1/embeddings", {"model": embed, "input": "hi"}),
        ]
        for secret in (looker.key["secret"], capped):
            # Twice: the second time the key is in the principal cache the fast path reads.
            for _ in range(2):
                assert http.get("/v1/models", headers=_auth(secret)).status_code == 200
                for path, body in runs:
                    answer = http.post(path, json=body, headers=_auth(secret))
                    assert answer.status_code == 403, (path, answer.text)
                    assert answer.json()["error"]["code"] == "insufficient_role"
        for path, body in runs:
            for _ in range(2):
                answer = http.post(path, json=body, headers=_auth(member.key["secret"]))
                assert answer.status_code == 200, (path, answer.text)


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
