"""Builders for tenancy tests: orgs with members and keys, through the public API."""

from __future__ import annotations

from dataclasses import dataclass

from neocloud.client import Client


@dataclass
class Tenant:
    org: dict
    user: dict
    key: dict  # includes the secret
    client: Client


def client_for(admin: Client, secret: str) -> Client:
    """Another SDK client on the same TestClient app, with another key."""
    from fastapi.testclient import TestClient

    http = admin._http
    assert isinstance(http, TestClient)
    other = TestClient(http.app, raise_server_exceptions=False)
    return Client(api_key=secret, http=other, retries=0)


def make_tenant(
    admin: Client, slug: str, *, role: str = "owner", email: str | None = None
) -> Tenant:
    """An org whose owner (or a member with ``role``) holds a key; the SDK acts as them."""
    email = email or f"{role}@{slug}.example"
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    if role == "owner":
        users = admin.users.list(org["id"])["data"]
        user = next(u for u in users if u["email"] == email)
    else:
        user = admin.users.add(org["id"], email, role=role)
    key = admin.keys.create(f"{role} key", org_id=org["id"], user_id=user["id"])
    return Tenant(org, user, key, client_for(admin, key["secret"]))


def add_member(admin: Client, tenant: Tenant, role: str) -> Tenant:
    user = admin.users.add(tenant.org["id"], f"{role}@{tenant.org['slug']}.example", role=role)
    key = admin.keys.create(f"{role} key", org_id=tenant.org["id"], user_id=user["id"])
    return Tenant(tenant.org, user, key, client_for(admin, key["secret"]))
