"""Authentication: 401s with the exact error shape, keys shown once and stored hashed."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.tenancy.service import bootstrap_operator
from neocloud.tenancy.tables import ApiKeyRow, OrgRow

from .helpers import client_for, make_tenant


def _assert_auth_error(response, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "code", "message", "param"}
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_missing_key_is_401(http: TestClient) -> None:
    _assert_auth_error(http.get("/api/v1/me"), "missing_api_key")


def test_unknown_key_is_401(http: TestClient, admin_key: str) -> None:
    headers = {"Authorization": "Bearer nck_" + "A" * 43}
    _assert_auth_error(http.get("/api/v1/orgs", headers=headers), "invalid_api_key")
    _assert_auth_error(
        http.get("/api/v1/me", headers={"Authorization": "Bearer junk"}), "invalid_api_key"
    )


def test_revoked_key_is_401(admin: Client, http: TestClient) -> None:
    made = admin.keys.create("temp")
    headers = {"Authorization": f"Bearer {made['secret']}"}
    assert http.get("/api/v1/me", headers=headers).status_code == 200
    revoked = admin.keys.revoke(made["id"])
    assert revoked["revoked_at"] is not None
    _assert_auth_error(http.get("/api/v1/me", headers=headers), "invalid_api_key")


def test_expired_key_is_401(admin: Client, http: TestClient, clock: VirtualClock) -> None:
    made = admin.keys.create("short", expires_at="2026-03-01T13:00:00Z")
    headers = {"Authorization": f"Bearer {made['secret']}"}
    assert http.get("/api/v1/me", headers=headers).status_code == 200
    clock.advance(3600)
    _assert_auth_error(http.get("/api/v1/me", headers=headers), "invalid_api_key")


def test_expiry_in_the_past_is_422(admin: Client) -> None:
    with pytest.raises(ApiError) as info:
        admin.keys.create("old", expires_at="2020-01-01T00:00:00Z")
    exc = info.value
    assert (exc.status, exc.code, exc.param) == (422, "expires_at_in_past", "expires_at")


def test_secret_shown_once_and_only_hash_stored(admin: Client, db: Database) -> None:
    made = admin.keys.create("ci")
    secret = made["secret"]
    assert secret.startswith("nck_")
    assert made["prefix"] == secret[:12]
    assert "secret" not in admin.keys.get(made["id"])
    assert all("secret" not in k for k in admin.keys.list()["data"])
    with db.transaction() as s:
        row = s.get(ApiKeyRow, made["id"])
        assert row is not None
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        rows = s.execute(sa.select(ApiKeyRow.__table__)).all()
    values = [str(v) for r in rows for v in r]
    assert values
    assert not any(secret in v for v in values)


def test_last_used_at_moves(admin: Client, clock: VirtualClock) -> None:
    made = admin.keys.create("worker")
    assert made["last_used_at"] is None
    worker = client_for(admin, made["secret"])
    worker.get("me")
    first = admin.keys.get(made["id"])["last_used_at"]
    assert first == "2026-03-01T12:00:00Z"
    clock.advance(90)
    worker.get("me")
    assert admin.keys.get(made["id"])["last_used_at"] == "2026-03-01T12:01:30Z"


def test_me_describes_the_principal(admin: Client) -> None:
    me = admin.get("me")
    assert me["object"] == "principal"
    assert me["is_operator"] is True
    assert me["role"] == "owner"
    assert me["user"]["email"] == "admin@operator.local"
    assert me["org"]["object"] == "organization"
    assert me["org"]["is_operator"] is True
    assert me["org_id"] == me["org"]["id"]


def test_bootstrap_is_idempotent(db: Database, clock: VirtualClock) -> None:
    assert bootstrap_operator(db=db, clock=clock) is not None
    assert bootstrap_operator(db=db, clock=clock) is None
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OrgRow)) == 1


def test_demoting_a_user_takes_effect_at_once(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    assert acme.client.get("me")["role"] == "admin"
    admin.users.set_role(acme.org["id"], acme.user["id"], "viewer")
    assert acme.client.get("me")["role"] == "viewer"


def test_key_role_caps_membership(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    capped = acme.client.keys.create("read only", role="viewer")
    viewer = client_for(admin, capped["secret"])
    assert viewer.get("me")["role"] == "viewer"
    # A viewer makes no keys at all (issue 13, finding 5).
    with pytest.raises(ApiError) as info:
        viewer.keys.create("escalate", role="owner")
    assert info.value.status == 403
    # A capped key cannot mint a stronger one; without a role, the new key inherits the cap.
    member = client_for(admin, acme.client.keys.create("member", role="member")["secret"])
    with pytest.raises(ApiError) as info:
        member.keys.create("escalate", role="owner")
    assert info.value.status == 403
    weaker = member.keys.create("same")
    assert weaker["role"] == "member"


def test_last_used_at_is_written_at_most_once_per_interval(
    admin_key: str, db: Database, clock: VirtualClock
) -> None:
    from neocloud.tenancy.service import authenticate_key

    def touched() -> object:
        with db.transaction() as s:
            return s.scalar(sa.select(ApiKeyRow.last_used_at))

    principal = authenticate_key(db=db, clock=clock, token=admin_key, touch_interval_s=60)
    assert principal.is_operator_admin
    first = touched()
    clock.advance(30)
    authenticate_key(db=db, clock=clock, token=admin_key, touch_interval_s=60)
    assert touched() == first
    clock.advance(31)
    authenticate_key(db=db, clock=clock, token=admin_key, touch_interval_s=60)
    assert touched() == clock.now()


def test_concurrent_bootstrap_makes_one_operator(db: Database, clock: VirtualClock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: bootstrap_operator(db=db, clock=clock), range(4)))
    assert sum(r is not None for r in results) == 1
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OrgRow)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(ApiKeyRow)) == 1
