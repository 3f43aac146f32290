"""Orgs, projects and users through the API: roles, isolation, uniqueness, pagination."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client

from .helpers import add_member, make_tenant


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_operator_creates_org_with_owner(admin: Client) -> None:
    org = admin.orgs.create("Acme Labs", owner_email="Founder@Acme.example")
    assert org["object"] == "organization"
    assert org["id"].startswith("org_")
    assert org["slug"] == "acme-labs"
    assert org["is_operator"] is False
    assert org["created_at"] == "2026-03-01T12:00:00Z"
    users = admin.users.list(org["id"])["data"]
    assert [(u["email"], u["role"]) for u in users] == [("founder@acme.example", "owner")]
    assert admin.orgs.get(org["id"]) == org


def test_slug_taken_is_409(admin: Client) -> None:
    admin.orgs.create("Acme", slug="acme")
    exc = _error(admin.orgs.create, "Acme Two", slug="acme")
    assert (exc.status, exc.code, exc.param) == (409, "slug_taken", "slug")


def test_tenant_cannot_create_orgs(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    exc = _error(acme.client.orgs.create, "Mine")
    assert exc.status == 403


def test_member_of_one_org_cannot_read_another(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="member")
    globex = make_tenant(admin, "globex")
    exc = _error(acme.client.orgs.get, globex.org["id"])
    assert (exc.status, exc.code, exc.param) == (404, "org_not_found", "org_id")
    assert _error(acme.client.projects.list, globex.org["id"]).status == 404
    assert _error(acme.client.quotas.list, globex.org["id"]).status == 404
    listed = acme.client.orgs.list()["data"]
    assert [o["id"] for o in listed] == [acme.org["id"]]
    project = globex.client.projects.create(globex.org["id"], "secret")
    assert _error(acme.client.projects.get, project["id"]).code == "project_not_found"


def test_unknown_org_is_404(admin: Client) -> None:
    exc = _error(admin.orgs.get, "org_01JAAAAAAAAAAAAAAAAAAAAAAA")
    assert (exc.status, exc.code) == (404, "org_not_found")


def test_admin_updates_org_member_cannot(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    assert acme.client.orgs.update(acme.org["id"], name="Acme Inc")["name"] == "Acme Inc"
    member = add_member(admin, acme, "member")
    assert _error(member.client.orgs.update, acme.org["id"], name="x").code == "insufficient_role"


def test_projects_roles_and_unique_names(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    viewer = add_member(admin, acme, "viewer")
    project = acme.client.projects.create(acme.org["id"], "training", description="runs")
    assert project["object"] == "project"
    assert project["id"].startswith("prj_")
    assert project["org_id"] == acme.org["id"]
    exc = _error(viewer.client.projects.create, acme.org["id"], "mine")
    assert (exc.status, exc.code) == (403, "insufficient_role")
    exc = _error(acme.client.projects.create, acme.org["id"], "training")
    assert (exc.status, exc.code, exc.param) == (409, "project_name_taken", "name")
    assert [p["id"] for p in viewer.client.projects.list(acme.org["id"])["data"]] == [project["id"]]
    assert viewer.client.projects.get(project["id"]) == project


def test_admin_adds_users_and_duplicates_conflict(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    user = acme.client.users.add(acme.org["id"], "Dev@Acme.example", name="Dev", role="member")
    assert user["object"] == "user"
    assert (user["email"], user["role"], user["org_id"]) == (
        "dev@acme.example",
        "member",
        acme.org["id"],
    )
    exc = _error(acme.client.users.add, acme.org["id"], "dev@acme.example")
    assert (exc.status, exc.code) == (409, "already_member")
    # Admins cannot make owners; only owners can.
    exc = _error(acme.client.users.add, acme.org["id"], "boss@acme.example", role="owner")
    assert exc.status == 403


def test_same_user_in_two_orgs(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    globex = make_tenant(admin, "globex")
    a = acme.client.users.add(acme.org["id"], "shared@example.com")
    b = globex.client.users.add(globex.org["id"], "shared@example.com", role="viewer")
    assert a["id"] == b["id"]


def test_last_owner_cannot_be_demoted(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    exc = _error(acme.client.users.set_role, acme.org["id"], acme.user["id"], "admin")
    assert (exc.status, exc.code, exc.param) == (409, "last_owner", "role")
    second = acme.client.users.add(acme.org["id"], "cofounder@acme.example", role="owner")
    demoted = acme.client.users.set_role(acme.org["id"], acme.user["id"], "admin")
    assert demoted["role"] == "admin"
    exc = _error(admin.users.set_role, acme.org["id"], second["id"], "member")
    assert exc.code == "last_owner"


def test_set_role_of_non_member_is_404(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    exc = _error(
        acme.client.users.set_role, acme.org["id"], "usr_01JAAAAAAAAAAAAAAAAAAAAAAA", "viewer"
    )
    assert (exc.status, exc.code, exc.param) == (404, "user_not_found", "user_id")


def test_unknown_field_is_422_naming_it(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    exc = _error(admin.post, f"orgs/{acme.org['id']}/projects", {"name": "x", "gpus": 8})
    assert (exc.status, exc.code, exc.param) == (422, "unknown_field", "gpus")
    exc = _error(admin.post, "keys", {"name": "x", "scope": "all"})
    assert (exc.status, exc.code, exc.param) == (422, "unknown_field", "scope")


def test_strings_are_bounded(admin: Client) -> None:
    exc = _error(admin.orgs.create, "x" * 201)
    assert (exc.status, exc.param) == (422, "name")


def test_idempotent_org_create(admin: Client) -> None:
    first = admin.orgs.create("Once", idempotency_key="create-once")
    again = admin.orgs.create("Once", idempotency_key="create-once")
    assert again["id"] == first["id"]
    exc = _error(admin.orgs.create, "Twice", idempotency_key="create-once")
    assert (exc.status, exc.code) == (409, "idempotency_key_reused")


def test_pagination_over_more_than_a_page(admin: Client) -> None:
    created = [admin.orgs.create(f"Org {i}", slug=f"org-{i}")["id"] for i in range(7)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = admin.orgs.list(limit=3, after=after)
        pages += 1
        assert page["object"] == "list"
        assert len(page["data"]) <= 3
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert page["next_cursor"]
        after = page["next_cursor"]
    assert pages == 3  # 8 orgs (with the operator's) in pages of 3
    assert len(seen) == len(set(seen)) == 8
    assert set(created) <= set(seen)
    assert seen == sorted(seen)


def test_bad_cursor_is_400(admin: Client) -> None:
    exc = _error(admin.orgs.list, after="!!!")
    assert (exc.status, exc.code, exc.param) == (400, "invalid_cursor", "after")


def test_removing_a_member_stops_their_keys(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    member = add_member(admin, acme, "member")
    assert member.client.get("me")["role"] == "member"
    acme.client.users.remove(acme.org["id"], member.user["id"])
    assert _error(member.client.get, "me").status == 401
    assert _error(acme.client.users.remove, acme.org["id"], member.user["id"]).status == 404
    exc = _error(acme.client.users.remove, acme.org["id"], acme.user["id"])
    assert (exc.status, exc.code, exc.param) == (409, "last_owner", "user_id")
