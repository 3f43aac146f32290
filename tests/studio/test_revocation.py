"""A key revoked, a member removed or demoted, a key expired: ``/v1`` honours it on the very next
request, although ``/v1`` caches principals per process (``neocloud.studio.auth``).

In-process, on both paths: the fast path (a chat completion for an upstream-pool model, no
``Idempotency-Key``) and the full stack (the echo engine, embeddings). Across processes: two
gateway servers on one database; a revoke through one is refused by the other within a second.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api import fastpath
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import SystemClock, VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.auth import PrincipalCache
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.proxy import proxy as real_proxy
from neocloud.studio.runtime import StudioRuntime
from neocloud.tenancy import service
from neocloud.tenancy.tables import ApiKeyRow, CredentialsVersionRow

from .servers import gateway_servers

UPSTREAM_MODEL = "meta/llama-3-8b"

# path name -> (endpoint, body): which requests take which path
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast path": (
        "/v1/chat/completions",
        {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    "full stack, engine": (
        "/v1/completions",
        {"model": "neocloud/echo", "prompt": "hi", "max_tokens": 2},
    ),
    "full stack, embeddings": (
        "/v1/embeddings",
        {"model": "neocloud/hash-embed", "input": "hi"},
    ),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A poll far longer than any test here: in one process, tenancy's own counter must suffice.
    return Settings(data_dir=tmp_path, key_touch_interval_s=0, studio_auth_poll_s=60)


def _upstream() -> httpx2.MockTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":  # the pool's health probe
            return httpx2.Response(200, json={"object": "list", "data": []})
        body = json.loads(request.content)
        message = {"role": "assistant", "content": "hi"}
        return httpx2.Response(
            200,
            json={
                "id": "up-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    return httpx2.MockTransport(handle)


class Spy:
    """Which requests the fast path served, and the principal each admitted request ran as."""

    def __init__(self) -> None:
        self.fast = 0
        self.admitted: list[Principal] = []


@pytest.fixture
def spy(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Spy:
    seen = Spy()

    async def fast_proxy(*args: Any, **kwargs: Any) -> Any:
        seen.fast += 1
        return await real_proxy(*args, **kwargs)

    monkeypatch.setattr(fastpath, "proxy", fast_proxy)
    policy = app.state.studio.policy
    admit = policy.admit

    def admitted(caller: Principal, *args: Any, **kwargs: Any) -> None:
        seen.admitted.append(caller)
        admit(caller, *args, **kwargs)

    monkeypatch.setattr(policy, "admit", admitted)
    return seen


@pytest.fixture
def http(app: FastAPI, admin_key: str, spy: Spy) -> Iterator[TestClient]:
    runtime: StudioRuntime = app.state.studio
    pool = UpstreamPool(
        "vllm-a", ["http://a.local/v1"], client=httpx2.AsyncClient(transport=_upstream())
    )
    runtime.catalog.add_upstream(pool)
    runtime.catalog.add(
        CatalogModel(UPSTREAM_MODEL, "vllm-a", ModelKind.TEXT, 8192, Decimal("0.1"), Decimal("0.2"))
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _platform(http: TestClient, key: str, method: str, path: str, body: Any = None) -> Any:
    answer = http.request(
        method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


_orgs = itertools.count()


def _member_key(
    http: TestClient, admin_key: str, *, role: str = "member", expires_at: datetime | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(org, user, key with its secret): a member of a fresh org, holding a key."""
    slug = f"acme-{next(_orgs)}"
    org = _platform(
        http,
        admin_key,
        "POST",
        "/orgs",
        {"name": slug, "slug": slug, "owner_email": f"o@{slug}.io"},
    )
    user = _platform(
        http, admin_key, "POST", f"/orgs/{org['id']}/users", {"email": f"m@{slug}.io", "role": role}
    )
    body: dict[str, Any] = {"name": "k", "org_id": org["id"], "user_id": user["id"]}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    key = _platform(http, admin_key, "POST", "/keys", body)
    return org, user, key


def _call(http: TestClient, secret: str, path: str) -> httpx.Response:
    endpoint, body = REQUESTS[path]
    return http.post(endpoint, json=body, headers={"Authorization": f"Bearer {secret}"})


def _cached(http: TestClient, secret: str, path: str, spy: Spy) -> None:
    """Two successful requests: the first fills the cache, the second is served from it."""
    for _ in range(2):
        answer = _call(http, secret, path)
        assert answer.status_code == 200, answer.text
    if path == "fast path":
        assert spy.fast == 1  # the second request came from the cache, on the fast path


def _refused(answer: httpx.Response, message: str) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json() == {
        "error": {
            "type": "authentication_error",
            "code": "invalid_api_key",
            "message": message,
            "param": None,
        }
    }


@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_revoked_key_is_refused_on_the_next_request(
    http: TestClient, admin_key: str, spy: Spy, path: str
) -> None:
    _, _, key = _member_key(http, admin_key)
    _, _, other = _member_key(http, admin_key)
    _cached(http, key["secret"], path, spy)
    assert _call(http, other["secret"], path).status_code == 200

    _platform(http, admin_key, "POST", f"/keys/{key['id']}/revoke")

    _refused(_call(http, key["secret"], path), "the API key has been revoked")
    assert _call(http, other["secret"], path).status_code == 200  # only that key


@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_removed_member_s_key_is_refused_on_the_next_request(
    http: TestClient, admin_key: str, spy: Spy, path: str
) -> None:
    org, user, key = _member_key(http, admin_key)
    _cached(http, key["secret"], path, spy)

    _platform(http, admin_key, "DELETE", f"/orgs/{org['id']}/users/{user['id']}")

    _refused(_call(http, key["secret"], path), "the API key is not valid")


@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_demoted_member_s_next_request_runs_with_the_new_role(
    http: TestClient, admin_key: str, spy: Spy, path: str
) -> None:
    org, user, key = _member_key(http, admin_key, role="admin")
    _cached(http, key["secret"], path, spy)
    assert [p.role for p in spy.admitted] == [Role.ADMIN, Role.ADMIN]

    _platform(http, admin_key, "PATCH", f"/orgs/{org['id']}/users/{user['id']}", {"role": "member"})

    assert _call(http, key["secret"], path).status_code == 200
    assert spy.admitted[-1].role is Role.MEMBER
    assert spy.admitted[-1].key_id == key["id"]

    # A viewer runs no model (issue 13): refused at once, the cached principal notwithstanding.
    _platform(http, admin_key, "PATCH", f"/orgs/{org['id']}/users/{user['id']}", {"role": "viewer"})
    refused = _call(http, key["secret"], path)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_role"


@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_cached_key_is_refused_once_it_expires(
    http: TestClient, admin_key: str, spy: Spy, clock: VirtualClock, path: str
) -> None:
    _, _, key = _member_key(http, admin_key, expires_at=clock.now() + timedelta(seconds=30))
    _cached(http, key["secret"], path, spy)
    clock.advance(29.9)
    assert _call(http, key["secret"], path).status_code == 200
    if path == "fast path":
        assert spy.fast == 2  # still served from the cache just before it expires

    clock.advance(0.1)

    _refused(_call(http, key["secret"], path), "the API key has expired")


# -- the cache alone, against a real database ---------------------------------------------------


def _key(db: Database, clock: VirtualClock) -> tuple[Principal, str, str]:
    """(the operator admin's principal, a key's id, its secret)."""
    secret = service.bootstrap_operator(db=db, clock=clock)
    assert secret is not None
    admin = service.authenticate_key(db=db, clock=clock, token=secret)
    made = service.create_key(db=db, clock=clock, actor=admin, name="k")
    return admin, made.key.id, made.secret


def test_a_check_that_raced_a_revoke_is_not_cached_as_current(
    db: Database, clock: VirtualClock
) -> None:
    admin, key_id, secret = _key(db, clock)
    cache = PrincipalCache(clock=clock)
    stamp = cache.stamp()  # as studio_caller does, before the check
    principal = service.authenticate_key(db=db, clock=clock, token=secret)
    service.revoke_key(db=db, clock=clock, actor=admin, key_id=key_id)  # commits meanwhile
    cache.put(secret, principal, stamp)
    assert cache.get(secret) is None
    cache.put(secret, principal, cache.stamp())  # a stamp taken now: served (the control)
    assert cache.get(secret) == principal


def test_the_poll_sees_another_process_s_change(db: Database, clock: VirtualClock) -> None:
    _, _, secret = _key(db, clock)
    cache = PrincipalCache(clock=clock, version=lambda: service.credentials_version(db))
    cache.poll()
    principal = service.authenticate_key(db=db, clock=clock, token=secret)
    cache.put(secret, principal, cache.stamp())
    cache.poll()  # nothing changed
    assert cache.get(secret) == principal

    before = service.credentials_version(db)
    with db.transaction() as s:  # what another process's revoke writes; this one's count stays
        row = s.get(CredentialsVersionRow, 1)
        if row is None:  # the test's emptied tables
            s.add(CredentialsVersionRow(id=1, version=before + 1))
        else:
            row.version += 1
    assert service.credentials_version(db) == before + 1
    assert cache.get(secret) == principal  # not polled yet
    cache.poll()
    assert cache.get(secret) is None


def test_every_credential_change_bumps_the_version_and_a_no_op_does_not(
    db: Database, clock: VirtualClock
) -> None:
    admin, key_id, _ = _key(db, clock)
    org = service.create_org(db=db, clock=clock, actor=admin, name="Acme", owner_email="o@a.io")
    member = service.add_user(db=db, clock=clock, actor=admin, org_id=org.id, email="m@a.io")
    versions = [service.credentials_version(db)]

    def step() -> int:
        versions.append(service.credentials_version(db))
        return versions[-1] - versions[-2]

    service.revoke_key(db=db, clock=clock, actor=admin, key_id=key_id)
    assert step() == 1
    service.revoke_key(db=db, clock=clock, actor=admin, key_id=key_id)  # again: nothing changes
    assert step() == 0
    args = {"db": db, "clock": clock, "actor": admin, "org_id": org.id, "user_id": member.user.id}
    service.set_member_role(**args, role=Role.ADMIN)
    assert step() == 1
    service.set_member_role(**args, role=Role.ADMIN)
    assert step() == 0
    service.remove_member(db=db, actor=admin, org_id=org.id, user_id=member.user.id)
    assert step() == 1


# -- two server processes on one database -------------------------------------------------------


@pytest.fixture
def servers(db: Database, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """Two gateway processes (the default poll) on the test's database, and the admin key."""
    key = service.bootstrap_operator(db=db, clock=SystemClock())
    assert key is not None
    env = {
        **os.environ,
        "NEOCLOUD_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
        "NEOCLOUD_DATA_DIR": str(tmp_path),
    }
    for name in ("NEOCLOUD_REDIS_URL", "NEOCLOUD_STUDIO_AUTH_POLL_S"):
        env.pop(name, None)
    with gateway_servers(env, tmp_path) as urls:
        yield urls, key


def test_a_revoke_through_one_process_reaches_the_other_within_a_second(
    db: Database, servers: tuple[list[str], str]
) -> None:
    (a, b), admin_key = servers
    admin = {"Authorization": f"Bearer {admin_key}"}
    body = {"model": "neocloud/echo", "prompt": "x", "max_tokens": 1}
    with httpx.Client(timeout=10) as http:

        def new_key() -> tuple[str, dict[str, str]]:
            made = http.post(f"{b}/api/v1/keys", json={"name": "k"}, headers=admin).json()
            return made["id"], {"Authorization": f"Bearer {made['secret']}"}

        def complete(server: str, auth: dict[str, str]) -> int:
            return http.post(f"{server}/v1/completions", json=body, headers=auth).status_code

        # The control: a revocation written behind tenancy's back (no version bump) is still
        # served by A from its cache, while B, which never cached the key, refuses it.
        key_id, auth = new_key()
        assert complete(a, auth) == 200
        with db.transaction() as s:
            s.execute(
                sa.update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(revoked_at=datetime.now(UTC))
            )
        assert complete(a, auth) == 200
        assert complete(b, auth) == 401

        delays = []
        for n in range(5):
            key_id, auth = new_key()
            assert complete(a, auth) == 200
            assert complete(a, auth) == 200  # cached in A
            time.sleep(0.05 * n)  # revoke at another phase of A's poll each time
            answer = http.post(f"{b}/api/v1/keys/{key_id}/revoke", headers=admin)
            assert answer.status_code == 200, answer.text
            revoked = time.monotonic()
            while (status := complete(a, auth)) == 200:
                assert time.monotonic() - revoked < 3, "A still serves the revoked key after 3 s"
                time.sleep(0.02)
            delays.append(time.monotonic() - revoked)
            assert status == 401
    print(
        f"{db.dialect}: revoked through B, refused by A after "
        f"{', '.join(f'{d * 1000:.0f}' for d in delays)} ms "
        f"(median {statistics.median(delays) * 1000:.0f} ms)"
    )
    assert max(delays) < 1.0
