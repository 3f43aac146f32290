"""Secrets that stay secret (issue 13, findings 1, 3 and 4): the idempotency store keeps no
secret and replays only to the key that made the request, after authenticating it; stored
responses expire after 24 h; an org's audit log holds only what its own members and the
operator did to it."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.middleware import SECRET_RESPONSE_FIELDS, purge_expired
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.db.metadata import all_metadata
from neocloud.db.tables import IdempotencyRow
from neocloud.kernel.clock import VirtualClock
from neocloud.studio.engines.fake import fake_catalog
from neocloud.tenancy.tables import AuditEventRow


@dataclass
class Tenant:
    org: dict[str, Any]
    key: dict[str, Any]  # with its secret
    client: Client


def make_tenant(admin: Client, slug: str) -> Tenant:
    """An org whose owner holds a key, and the SDK acting as that owner."""
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    [owner] = admin.users.list(org["id"])["data"]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=owner["id"])
    http = admin._http
    assert isinstance(http, TestClient)
    return Tenant(org, key, Client(api_key=key["secret"], http=TestClient(http.app), retries=0))


def _bearer(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _every_text_value(db: Database) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every non-null value of every table."""
    found = []
    with db.engine.connect() as conn:
        for table in all_metadata().sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                for column, value in row.items():
                    if value is not None:
                        found.append((table.name, column, str(value)))
    return found


def _where(db: Database, needle: str) -> list[tuple[str, str]]:
    return [(t, c) for t, c, v in _every_text_value(db) if needle in v]


def test_key_secret_is_stored_nowhere_and_a_replay_says_it_is_withheld(
    http: TestClient, admin_key: str, db: Database
) -> None:
    headers = _bearer(admin_key, "key-create-1")
    first = http.post("/api/v1/keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == 201
    secret = first.json()["secret"]
    assert secret.startswith("nck_")
    assert "redacted-fields" not in first.headers

    # Nothing that can authenticate is readable in the database: neither key's secret.
    assert _where(db, secret) == []
    assert _where(db, admin_key) == []
    with db.transaction() as s:
        [stored] = s.scalars(sa.select(IdempotencyRow)).all()
    assert stored.response_body["secret"] is None
    assert stored.scope.startswith("key_")  # the caller's key id, not a digest of its secret

    again = http.post("/api/v1/keys", json={"name": "ci"}, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["redacted-fields"] == "secret"
    replayed = again.json()
    assert replayed["secret"] is None
    assert {k: v for k, v in replayed.items() if k != "secret"} == {
        k: v for k, v in first.json().items() if k != "secret"
    }
    # The key made the first time still works; the replay made no other.
    assert http.get("/api/v1/me", headers=_bearer(secret)).status_code == 200
    names = [k["name"] for k in http.get("/api/v1/keys", headers=_bearer(admin_key)).json()["data"]]
    assert names.count("ci") == 1


def test_a_revoked_or_expired_key_replays_nothing(
    admin: Client, http: TestClient, clock: VirtualClock
) -> None:
    for how in ("revoked", "expired"):
        expires = (clock.now() + timedelta(hours=1)).isoformat() if how == "expired" else None
        parent = admin.keys.create(f"parent {how}", expires_at=expires)
        headers = _bearer(parent["secret"], f"child-{how}")
        first = http.post("/api/v1/keys", json={"name": f"child {how}"}, headers=headers)
        assert first.status_code == 201
        if how == "revoked":
            admin.keys.revoke(parent["id"])
        else:
            clock.advance(timedelta(hours=2))
        replay = http.post("/api/v1/keys", json={"name": f"child {how}"}, headers=headers)
        assert replay.status_code == 401, how
        assert replay.json()["error"]["code"] == "invalid_api_key"
        assert "idempotent-replayed" not in replay.headers
        assert first.json()["id"] not in replay.text


def test_another_key_with_the_same_idempotency_key_runs_its_own_request(
    admin: Client, http: TestClient, admin_key: str
) -> None:
    other = admin.keys.create("other")
    body = {"name": "same body"}
    mine = http.post("/api/v1/keys", json=body, headers=_bearer(admin_key, "shared-1"))
    theirs = http.post("/api/v1/keys", json=body, headers=_bearer(other["secret"], "shared-1"))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]


def test_a_stored_response_expires_after_24_hours(
    http: TestClient, admin_key: str, clock: VirtualClock, db: Database
) -> None:
    headers = _bearer(admin_key, "old-1")
    first = http.post("/api/v1/keys", json={"name": "old"}, headers=headers)
    clock.advance(timedelta(hours=23, minutes=59))
    within = http.post("/api/v1/keys", json={"name": "old"}, headers=headers)
    assert within.headers.get("idempotent-replayed") == "true"
    assert within.json()["id"] == first.json()["id"]
    clock.advance(timedelta(minutes=2))
    after = http.post("/api/v1/keys", json={"name": "old"}, headers=headers)
    assert after.status_code == 201
    assert "idempotent-replayed" not in after.headers
    assert after.json()["id"] != first.json()["id"]


def test_expired_rows_are_purged_a_bounded_batch_per_new_key(
    http: TestClient, admin_key: str, clock: VirtualClock, db: Database
) -> None:
    for n in range(3):
        http.post("/api/v1/orgs", json={"name": f"Purge {n}"}, headers=_bearer(admin_key, f"p{n}"))
    clock.advance(timedelta(hours=25))
    with db.transaction() as s:
        assert purge_expired(s, clock.now() - timedelta(hours=24), limit=2) == 2
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(IdempotencyRow)) == 1
    # The next new key purges the rest on its way in.
    http.post("/api/v1/orgs", json={"name": "Fresh"}, headers=_bearer(admin_key, "fresh"))
    with db.transaction() as s:
        assert s.scalars(sa.select(IdempotencyRow.key)).all() == ["fresh"]


# Response field names that would hold something that authenticates.
_SECRET_LOOKING = {"secret", "password", "token", "api_key", "private_key", "access_token"}


def _properties(schema: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        names.update(schema.get("properties", {}))
        for value in schema.values():
            names |= _properties(value)
    elif isinstance(schema, list):
        for item in schema:
            names |= _properties(item)
    return names


def test_every_secret_looking_response_field_is_withheld_from_the_store(http: TestClient) -> None:
    for doc_url in ("/api/v1/openapi.json",):
        schemas = http.get(doc_url).json()["components"]["schemas"]
        looking = {
            name
            for name in _properties(schemas)
            if name in _SECRET_LOOKING or name.endswith(("_secret", "_password", "_token"))
        }
        assert "secret" in looking  # the check sees KeyCreated
        assert looking <= SECRET_RESPONSE_FIELDS


def _events(db: Database) -> list[AuditEventRow]:
    with db.transaction() as s:
        return list(s.scalars(sa.select(AuditEventRow).order_by(AuditEventRow.id)))


def test_a_foreign_or_anonymous_attempt_never_lands_in_the_target_orgs_log(
    admin: Client, http: TestClient, db: Database
) -> None:
    acme = make_tenant(admin, "acme")
    globex = make_tenant(admin, "globex")
    operator_org = admin.get("me")["org_id"]
    target = f"/api/v1/orgs/{acme.org['id']}/projects"
    before = {e.id for e in _events(db)}
    chosen = f"req_{uuid.uuid4().hex[:24]}"  # a caller's id shaped like the platform's own

    foreign = http.post(
        target,
        json={"name": "x"},
        headers={**_bearer(globex.key["secret"]), "X-Request-Id": chosen},
    )
    anonymous = http.post(target, json={"name": "x"}, headers={"X-Request-Id": chosen})
    assert (foreign.status_code, anonymous.status_code) == (404, 401)

    new = [e for e in _events(db) if e.id not in before]
    assert len(new) == 2
    by_globex, by_nobody = new
    assert by_globex.org_id == globex.org["id"]
    assert by_globex.actor_key_id == globex.key["id"]
    assert by_globex.outsider
    assert (by_nobody.org_id, by_nobody.actor_key_id, by_nobody.outsider) == (
        operator_org,
        None,
        True,
    )
    assert all(e.request_id != chosen and e.request_id for e in new)
    assert [e for e in _events(db) if e.org_id == acme.org["id"] and e.status_code >= 400] == []
    # Acme's own log, as its owner reads it, shows none of it.
    assert all(e["status_code"] < 400 for e in acme.client.audit.list()["data"])


def test_the_operators_successful_change_to_an_org_stays_in_that_orgs_log(
    admin: Client, db: Database
) -> None:
    acme = make_tenant(admin, "acme")
    project = admin.projects.create(acme.org["id"], "by-operator")
    [event] = [e for e in _events(db) if e.target_id == project["id"]]
    assert (event.org_id, event.outsider) == (acme.org["id"], False)
    listed = acme.client.audit.list()["data"]
    assert [e["outsider"] for e in listed if e["target_id"] == project["id"]] == [False]


def test_an_idempotent_replay_is_audited_as_its_caller(
    http: TestClient, admin_key: str, admin: Client, db: Database
) -> None:
    headers = _bearer(admin_key, "audit-replay")
    http.post("/api/v1/orgs", json={"name": "Audited"}, headers=headers)
    http.post("/api/v1/orgs", json={"name": "Audited"}, headers=headers)
    first, replay = _events(db)[-2:]
    assert replay.actor_key_id == first.actor_key_id == admin.get("me")["key_id"]
    assert replay.org_id == first.org_id


def test_no_key_or_key_digest_reaches_the_audit_log(
    admin: Client, admin_key: str, db: Database
) -> None:
    made = admin.keys.create("ci")
    digests = {hashlib.sha256(k.encode()).hexdigest() for k in (admin_key, made["secret"])}
    values = [v for t, _, v in _every_text_value(db) if t == "audit_events"]
    assert values
    assert not any(k in v for v in values for k in (admin_key, made["secret"], *digests))


def test_a_revoked_key_replays_nothing_on_v1_either(
    app: FastAPI, admin: Client, http: TestClient
) -> None:
    """``/v1`` requests with an ``Idempotency-Key`` go through the same store (the studio's
    fast path hands them on), so the same rule holds there."""
    app.state.studio.catalog = fake_catalog()
    key = admin.keys.create("gateway")
    headers = _bearer(key["secret"], "embed-1")
    body = {"model": "neocloud/hash-embed", "input": "hi"}
    first = http.post("/v1/embeddings", json=body, headers=headers)
    assert first.status_code == 200, first.text
    again = http.post("/v1/embeddings", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    admin.keys.revoke(key["id"])
    refused = http.post("/v1/embeddings", json=body, headers=headers)
    assert refused.status_code == 401
    assert "idempotent-replayed" not in refused.headers
