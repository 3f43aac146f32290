"""SDK resources for tenancy: orgs, projects, users, API keys, SSH keys, quotas, the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]


def _body(**fields: Any) -> Obj:
    return {k: v for k, v in fields.items() if v is not None}


class OrgsResource(Resource):
    def create(
        self,
        name: str,
        *,
        slug: str | None = None,
        owner_email: str | None = None,
        owner_name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        body = _body(name=name, slug=slug, owner_email=owner_email, owner_name=owner_name)
        result: Obj = self._c.post("orgs", body, idempotency_key=idempotency_key)
        return result

    def list(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("orgs", limit=limit, after=after)
        return result

    def iter(self) -> Iterator[Obj]:
        return self._c.iter("orgs")

    def get(self, org_id: str) -> Obj:
        result: Obj = self._c.get(f"orgs/{org_id}")
        return result

    def update(self, org_id: str, *, name: str | None = None) -> Obj:
        result: Obj = self._c.patch(f"orgs/{org_id}", _body(name=name))
        return result


class ProjectsResource(Resource):
    def create(self, org_id: str, name: str, *, description: str | None = None) -> Obj:
        body = _body(name=name, description=description)
        result: Obj = self._c.post(f"orgs/{org_id}/projects", body)
        return result

    def list(self, org_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get(f"orgs/{org_id}/projects", limit=limit, after=after)
        return result

    def iter(self, org_id: str) -> Iterator[Obj]:
        return self._c.iter(f"orgs/{org_id}/projects")

    def get(self, project_id: str) -> Obj:
        result: Obj = self._c.get(f"projects/{project_id}")
        return result


class UsersResource(Resource):
    def add(
        self, org_id: str, email: str, *, name: str | None = None, role: str | None = None
    ) -> Obj:
        result: Obj = self._c.post(f"orgs/{org_id}/users", _body(email=email, name=name, role=role))
        return result

    def list(self, org_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get(f"orgs/{org_id}/users", limit=limit, after=after)
        return result

    def iter(self, org_id: str) -> Iterator[Obj]:
        return self._c.iter(f"orgs/{org_id}/users")

    def set_role(self, org_id: str, user_id: str, role: str) -> Obj:
        result: Obj = self._c.patch(f"orgs/{org_id}/users/{user_id}", {"role": role})
        return result

    def remove(self, org_id: str, user_id: str) -> None:
        self._c.delete(f"orgs/{org_id}/users/{user_id}")


class KeysResource(Resource):
    def create(
        self,
        name: str,
        *,
        org_id: str | None = None,
        user_id: str | None = None,
        role: str | None = None,
        expires_at: str | None = None,
    ) -> Obj:
        """Create a key; the answer's ``secret`` is the only time the key is shown."""
        body = _body(name=name, org_id=org_id, user_id=user_id, role=role, expires_at=expires_at)
        result: Obj = self._c.post("keys", body)
        return result

    def list(
        self, *, org_id: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get("keys", org_id=org_id, limit=limit, after=after)
        return result

    def iter(self, *, org_id: str | None = None) -> Iterator[Obj]:
        return self._c.iter("keys", org_id=org_id)

    def get(self, key_id: str) -> Obj:
        result: Obj = self._c.get(f"keys/{key_id}")
        return result

    def revoke(self, key_id: str) -> Obj:
        result: Obj = self._c.post(f"keys/{key_id}/revoke")
        return result


class QuotasResource(Resource):
    def list(self, org_id: str) -> Obj:
        result: Obj = self._c.get(f"orgs/{org_id}/quotas")
        return result

    def set(self, org_id: str, gpu_model: str, limit_gpus: int) -> Obj:
        result: Obj = self._c.request(
            "PUT", f"orgs/{org_id}/quotas/{gpu_model}", json={"limit_gpus": limit_gpus}
        )
        return result

    def reset(self, org_id: str, gpu_model: str) -> None:
        self._c.delete(f"orgs/{org_id}/quotas/{gpu_model}")

    def list_defaults(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("quota-defaults", limit=limit, after=after)
        return result

    def set_default(self, gpu_model: str, limit_gpus: int) -> Obj:
        result: Obj = self._c.request(
            "PUT", f"quota-defaults/{gpu_model}", json={"limit_gpus": limit_gpus}
        )
        return result


class AuditResource(Resource):
    def list(
        self,
        *,
        org_id: str | None = None,
        actor: str | None = None,
        method: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Obj:
        result: Obj = self._c.get(
            "audit-events",
            org_id=org_id,
            actor=actor,
            method=method,
            since=since,
            limit=limit,
            after=after,
        )
        return result

    def iter(self, **filters: Any) -> Iterator[Obj]:
        return self._c.iter("audit-events", **filters)


class SshKeysResource(Resource):
    """The org's SSH public keys (``/ssh-keys``), named by instances and clusters."""

    def add(self, name: str, public_key: str, *, idempotency_key: str | None = None) -> Obj:
        """Add one OpenSSH public key line (the ``.pub`` file's text) under ``name``."""
        body = {"name": name, "public_key": public_key}
        result: Obj = self._c.post("ssh-keys", body, idempotency_key=idempotency_key)
        return result

    def list(
        self, *, org_id: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get("ssh-keys", org_id=org_id, limit=limit, after=after)
        return result

    def iter(self, *, org_id: str | None = None) -> Iterator[Obj]:
        return self._c.iter("ssh-keys", org_id=org_id)

    def get(self, ssh_key_id: str) -> Obj:
        result: Obj = self._c.get(f"ssh-keys/{ssh_key_id}")
        return result

    def delete(self, ssh_key_id: str) -> Obj:
        """Delete a key; answers ``{"id", "object": "ssh_key", "deleted": true, "fingerprint"}``."""
        result: Obj = self._c.delete(f"ssh-keys/{ssh_key_id}")
        return result
