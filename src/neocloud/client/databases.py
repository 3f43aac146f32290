"""The SDK's managed databases: ``client.databases`` (``/databases``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]


class DatabasesResource(Resource):
    """Managed PostgreSQL: create (or restore a backup into a new database), list, read,
    delete, back up, list backups, and download the CA certificate."""

    def create(
        self,
        name: str,
        *,
        version: str,
        storage_gib: int,
        preset: str = "small",
        user: str = "app",
        allowed_cidrs: Sequence[str] = (),
        restore_from: str | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        """Create a database; the answer alone carries ``password`` and ``connection_string``
        (keep them: they are never shown again)."""
        body: Obj = {
            "name": name,
            "version": version,
            "storage_gib": storage_gib,
            "preset": preset,
            "user": user,
            "allowed_cidrs": list(allowed_cidrs),
        }
        if restore_from is not None:
            body["restore_from"] = restore_from
        result: Obj = self._c.post("databases", body, idempotency_key=idempotency_key)
        return result

    def list(
        self, *, deleted: bool = False, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get("databases", deleted=deleted or None, limit=limit, after=after)
        return result

    def iter(self, *, deleted: bool = False) -> Iterator[Obj]:
        return self._c.iter("databases", deleted=deleted or None)

    def get(self, database_id: str) -> Obj:
        result: Obj = self._c.get(f"databases/{database_id}")
        return result

    def delete(self, database_id: str) -> Obj:
        result: Obj = self._c.delete(f"databases/{database_id}")
        return result

    def backup(self, database_id: str, *, idempotency_key: str | None = None) -> Obj:
        """Ask for a backup now; answers it ``pending``."""
        result: Obj = self._c.post(
            f"databases/{database_id}/backups", None, idempotency_key=idempotency_key
        )
        return result

    def backups(
        self, database_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get(f"databases/{database_id}/backups", limit=limit, after=after)
        return result

    def options(self) -> Obj:
        """The versions the service nodes have, the size presets and the storage bounds."""
        result: Obj = self._c.get("database-options")
        return result

    def ca_certificate(self, database_id: str) -> str:
        """The CA certificate (PEM) to verify the server with (``sslmode=verify-full``)."""
        return self._c.get_text(f"databases/{database_id}/ca")
