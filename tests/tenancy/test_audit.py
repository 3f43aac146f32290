"""The audit log: every mutating call leaves one event; reads leave none; no secrets."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.tenancy.tables import AuditEventRow

from .helpers import add_member, make_tenant


def _events(db: Database) -> list[AuditEventRow]:
    with db.transaction() as s:
        return list(s.scalars(sa.select(AuditEventRow).order_by(AuditEventRow.id)))


def test_mutating_call_is_recorded_and_reads_are_not(admin: Client, db: Database) -> None:
    me = admin.get("me")
    admin.orgs.list()
    assert _events(db) == []
    org = admin.post("orgs", {"name": "Acme"}, idempotency_key="audit-1")
    admin.orgs.get(org["id"])
    [event] = _events(db)
    assert event.id.startswith("aud_")
    assert (event.method, event.path, event.status_code) == ("POST", "/api/v1/orgs", 201)
    assert event.target_id == org["id"]
    assert event.actor_key_id == me["key_id"]
    assert event.actor_user_id == me["user_id"]
    assert event.org_id == org["id"]  # the new org's log starts with its creation (issue 21)
    assert event.org_id != me["org_id"]
    assert event.request_id
    assert event.at.isoformat() == "2026-03-01T12:00:00+00:00"


def test_failed_and_unauthenticated_calls_are_recorded(
    admin: Client, http: TestClient, db: Database
) -> None:
    with pytest.raises(ApiError):
        admin.orgs.create("Bad", slug="Not A Slug")
    http.post("/api/v1/orgs", json={"name": "x"}, headers={"X-Request-Id": "req-anon"})
    failed, anonymous = _events(db)
    assert failed.status_code == 422
    assert failed.actor_user_id is not None
    assert (anonymous.status_code, anonymous.actor_key_id) == (401, None)
    # The platform's own request id, never the caller's choice (issue 13, finding 4), and the
    # operator's security log, as no org can be held to an anonymous call.
    assert anonymous.request_id is not None
    assert anonymous.request_id.startswith("req_")
    assert anonymous.org_id == admin.get("me")["org_id"]


def test_no_secret_is_recorded(admin: Client, db: Database) -> None:
    made = admin.keys.create("ci")
    [event] = _events(db)
    assert event.target_id == made["id"]
    assert not any(made["secret"] in str(v) for v in vars(event).values())


def test_org_path_sets_the_org(admin: Client, db: Database) -> None:
    acme = make_tenant(admin, "acme")
    acme.client.projects.create(acme.org["id"], "p1")
    last = _events(db)[-1]
    assert last.org_id == acme.org["id"]
    assert last.path == f"/api/v1/orgs/{acme.org['id']}/projects"


def test_listing_audit_events(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    globex = make_tenant(admin, "globex")
    acme.client.projects.create(acme.org["id"], "p1")
    globex.client.projects.create(globex.org["id"], "g1")

    everything = list(admin.audit.iter())
    assert all(e["object"] == "audit_event" for e in everything)
    assert len(everything) == 7  # 2 orgs, 1 user, 2 keys, 2 projects

    own = acme.client.audit.list()["data"]
    assert own
    assert {e["org_id"] for e in own} == {acme.org["id"]}
    by_actor = admin.audit.list(actor=acme.user["id"])["data"]
    assert [e["target_id"][:4] for e in by_actor] == ["prj_"]
    assert admin.audit.list(org_id=globex.org["id"], method="POST")["data"]
    assert admin.audit.list(method="DELETE")["data"] == []
    assert admin.audit.list(since="2030-01-01T00:00:00Z")["data"] == []

    with pytest.raises(ApiError) as info:
        acme.client.audit.list(org_id=globex.org["id"])
    assert (info.value.status, info.value.code) == (404, "org_not_found")
    member = add_member(admin, acme, "member")
    with pytest.raises(ApiError) as info:
        member.client.audit.list()
    assert info.value.code == "insufficient_role"
