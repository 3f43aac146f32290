"""SDK resources for storage: ``client.storage_pools`` (operator) and ``client.filesystems``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]
FS_SETTLED = frozenset({"available", "failed", "deleted"})
ATTACH_SETTLED = frozenset({"attached", "degraded", "failed", "detached"})


class StoragePoolsResource(Resource):
    def create(
        self,
        name: str,
        *,
        node_ids: list[str],
        backend: str = "glusterfs",
        replica: int = 2,
        brick_root: str | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        """Group ``role=storage`` nodes into a pool (operator admin)."""
        body: Obj = {"name": name, "backend": backend, "node_ids": node_ids, "replica": replica}
        if brick_root is not None:
            body["brick_root"] = brick_root
        result: Obj = self._c.post("storage-pools", body, idempotency_key=idempotency_key)
        return result

    def list(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("storage-pools", limit=limit, after=after)
        return result

    def iter(self) -> Iterator[Obj]:
        return self._c.iter("storage-pools")

    def get(self, pool: str) -> Obj:
        """By id or name."""
        result: Obj = self._c.get(f"storage-pools/{pool}")
        return result

    def delete(self, pool: str) -> Obj:
        result: Obj = self._c.delete(f"storage-pools/{pool}")
        return result

    def wait(self, pool: str, *, timeout_s: float = 300.0, poll_s: float = 0.5) -> Obj:
        """Poll until the pool is ready or failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.get(pool)
            if got["state"] in ("ready", "failed") or time.monotonic() >= deadline:
                return got
            time.sleep(poll_s)


class FilesystemsResource(Resource):
    def create(
        self,
        name: str,
        *,
        size_gib: int,
        pool: str,
        project_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        body: Obj = {"name": name, "size_gib": size_gib, "pool": pool}
        if project_id is not None:
            body["project_id"] = project_id
        result: Obj = self._c.post("filesystems", body, idempotency_key=idempotency_key)
        return result

    def list(
        self, *, state: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get("filesystems", state=state, limit=limit, after=after)
        return result

    def iter(self, *, state: str | None = None) -> Iterator[Obj]:
        return self._c.iter("filesystems", state=state)

    def get(self, filesystem_id: str) -> Obj:
        result: Obj = self._c.get(f"filesystems/{filesystem_id}")
        return result

    def resize(
        self, filesystem_id: str, size_gib: int, *, idempotency_key: str | None = None
    ) -> Obj:
        result: Obj = self._c.post(
            f"filesystems/{filesystem_id}/resize",
            {"size_gib": size_gib},
            idempotency_key=idempotency_key,
        )
        return result

    def attach(
        self,
        filesystem_id: str,
        *,
        mount_path: str,
        instance_id: str | None = None,
        cluster_id: str | None = None,
        read_only: bool = False,
        idempotency_key: str | None = None,
    ) -> Obj:
        """Mount it on an instance or on every member of a cluster."""
        body: Obj = {"mount_path": mount_path, "read_only": read_only}
        if instance_id is not None:
            body["instance_id"] = instance_id
        if cluster_id is not None:
            body["cluster_id"] = cluster_id
        result: Obj = self._c.post(
            f"filesystems/{filesystem_id}/attach", body, idempotency_key=idempotency_key
        )
        return result

    def detach(self, filesystem_id: str, attachment_id: str) -> Obj:
        result: Obj = self._c.post(
            f"filesystems/{filesystem_id}/attachments/{attachment_id}/detach", {}
        )
        return result

    def delete(self, filesystem_id: str) -> Obj:
        result: Obj = self._c.delete(f"filesystems/{filesystem_id}")
        return result

    def wait(
        self,
        filesystem_id: str,
        *,
        until: frozenset[str] = FS_SETTLED,
        attachments: bool = True,
        timeout_s: float = 300.0,
        poll_s: float = 0.5,
    ) -> Obj:
        """Poll until the filesystem's state is in ``until`` and (``attachments``) each
        attachment has settled (attached, degraded, failed or detached)."""
        deadline = time.monotonic() + timeout_s
        while True:
            fs = self.get(filesystem_id)
            settled = fs["state"] in until and (
                not attachments or all(a["state"] in ATTACH_SETTLED for a in fs["attachments"])
            )
            if settled or time.monotonic() >= deadline:
                return fs
            time.sleep(poll_s)
