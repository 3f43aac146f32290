"""Quotas (registered defaults, per-org overrides) and API key management."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.kernel.errors import QuotaExceeded
from neocloud.tenancy import domain
from neocloud.tenancy.service import effective_quota

from .helpers import add_member, make_tenant

H100 = "H100-SXM-80GB"


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_default_then_override_then_reset(admin: Client, db: Database) -> None:
    acme = make_tenant(admin, "acme")
    org_id = acme.org["id"]
    assert acme.client.quotas.list(org_id)["data"] == []
    assert effective_quota(db=db, org_id=org_id, gpu_model=H100) is None

    default = admin.quotas.set_default(H100, 16)
    assert (default["object"], default["gpu_model"], default["limit_gpus"]) == (
        "quota_default",
        H100,
        16,
    )
    [quota] = acme.client.quotas.list(org_id)["data"]
    assert quota == {
        "object": "quota",
        "org_id": org_id,
        "gpu_model": H100,
        "limit_gpus": 16,
        "source": "default",
        "default_gpus": 16,
        "usage": 0,
    }
    assert effective_quota(db=db, org_id=org_id, gpu_model=H100) == 16

    override = admin.quotas.set(org_id, H100, 256)
    assert (override["limit_gpus"], override["source"]) == (256, "override")
    admin.quotas.set(org_id, H100, 128)  # a second PUT updates, never duplicates
    admin.quotas.set(org_id, "B200", 8)
    listed = {q["gpu_model"]: q for q in acme.client.quotas.list(org_id)["data"]}
    assert (listed[H100]["limit_gpus"], listed[H100]["source"]) == (128, "override")
    b200 = "B200-SXM-180GB"  # an alias is stored as the canonical name
    assert (listed[b200]["source"], listed[b200]["default_gpus"]) == ("override", None)
    assert effective_quota(db=db, org_id=org_id, gpu_model=H100) == 128

    # Other orgs still get the default.
    globex = make_tenant(admin, "globex")
    assert effective_quota(db=db, org_id=globex.org["id"], gpu_model=H100) == 16

    admin.quotas.reset(org_id, H100)
    assert effective_quota(db=db, org_id=org_id, gpu_model=H100) == 16
    exc = _error(admin.quotas.reset, org_id, H100)
    assert (exc.status, exc.code) == (404, "quota_not_found")

    limit = effective_quota(db=db, org_id=org_id, gpu_model=H100)
    with pytest.raises(QuotaExceeded) as info:
        domain.check_quota(limit, 10, 8, gpu_model=H100)
    assert info.value.details["limit"] == 16


def test_only_operator_admins_set_quotas(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    exc = _error(acme.client.quotas.set, acme.org["id"], H100, 1000)
    assert (exc.status, exc.code) == (403, "operator_only")
    assert _error(acme.client.quotas.set_default, H100, 1000).status == 403


def test_quota_inputs_are_validated(admin: Client) -> None:
    acme = make_tenant(admin, "acme")
    assert _error(admin.quotas.set, acme.org["id"], H100, -1).status == 422
    assert _error(admin.quotas.set_default, "bad model!", 1).status == 422
    exc = _error(admin.quotas.set, "org_01JAAAAAAAAAAAAAAAAAAAAAAA", H100, 1)
    assert exc.code == "org_not_found"


def test_keys_list_own_and_org(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    member = add_member(admin, acme, "member")
    extra = member.client.keys.create("laptop")
    mine = [k["id"] for k in member.client.keys.list()["data"]]
    assert mine == [member.key["id"], extra["id"]]
    org_keys = {k["id"] for k in acme.client.keys.list(org_id=acme.org["id"])["data"]}
    assert {acme.key["id"], member.key["id"], extra["id"]} <= org_keys
    exc = _error(member.client.keys.list, org_id=acme.org["id"])
    assert exc.status == 403
    # A member cannot see or revoke another member's key; an admin can.
    assert _error(member.client.keys.get, acme.key["id"]).code == "key_not_found"
    assert acme.client.keys.revoke(extra["id"])["revoked_at"] is not None
    assert _error(member.client.keys.revoke, acme.key["id"]).status == 404


def test_admin_creates_service_key_for_member(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="admin")
    bot = acme.client.users.add(acme.org["id"], "ci-bot@acme.example", role="member")
    key = acme.client.keys.create("ci", user_id=bot["id"], role="viewer")
    assert (key["user_id"], key["org_id"], key["role"]) == (bot["id"], acme.org["id"], "viewer")
    exc = _error(acme.client.keys.create, "too strong", user_id=bot["id"], role="admin")
    assert (exc.status, exc.code) == (403, "role_above_membership")
    globex = make_tenant(admin, "globex")
    exc = _error(acme.client.keys.create, "foreign", org_id=globex.org["id"])
    assert exc.status == 404


def test_member_cannot_create_keys_for_others(admin: Client) -> None:
    acme = make_tenant(admin, "acme", role="member")
    exc = _error(acme.client.keys.create, "theirs", user_id=acme.org["id"])
    assert exc.status == 403


def test_operator_key_for_an_org_it_is_not_in_goes_to_its_first_owner(admin: Client) -> None:
    """Onboarding in one call: no user_id, an org the operator admin is not a member of."""
    org = admin.orgs.create("Acme AI", owner_email="ml@acme.example")
    [owner] = admin.users.list(org["id"])["data"]
    admin.users.add(org["id"], "second@acme.example", role="owner")  # later owners come second
    key = admin.keys.create("ci", org_id=org["id"])
    assert (key["org_id"], key["user_id"]) == (org["id"], owner["id"])

    me = admin.me()
    admin.users.add(org["id"], me["user"]["email"], role="viewer")  # a member: its own key
    mine = admin.keys.create("mine", org_id=org["id"])
    assert mine["user_id"] == me["user_id"]

    empty = admin.orgs.create("No Owner")
    exc = _error(admin.keys.create, "nobody", org_id=empty["id"])
    assert (exc.status, exc.code, exc.param) == (404, "user_not_found", "user_id")
