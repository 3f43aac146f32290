"""Managed databases on the wire: ``DatabaseCreate`` in; ``DatabaseOut``, ``DatabaseCreated``
(with the password and the full connection string, shown once), ``BackupOut`` out."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field

from neocloud.databases.domain import (
    MAX_ALLOWED_CIDRS,
    PRESETS,
    STORAGE_GIB_MAX,
    STORAGE_GIB_MIN,
    Preset,
)
from neocloud.databases.tables import DatabaseBackupRow, DatabaseRow
from neocloud.web.fields import Clean
from neocloud.web.schemas import RequestModel, ResponseModel, Time

API_PATH = "/api/v1/databases"


class DatabaseCreate(RequestModel):
    name: Clean = Field(
        min_length=1,
        max_length=63,
        description="The database's name: 1-63 lowercase letters, digits or _, starting with a"
        " letter; unique among the org's live databases",
    )
    version: Clean = Field(
        min_length=1, max_length=8, description="PostgreSQL major version a service node has"
    )
    preset: Clean = Field("small", max_length=16, description=f"Size preset: {', '.join(PRESETS)}")
    storage_gib: int = Field(
        ge=STORAGE_GIB_MIN, le=STORAGE_GIB_MAX, strict=True, description="Disk in GiB (billed)"
    )
    user: Clean = Field("app", min_length=1, max_length=63, description="The role you log in as")
    allowed_cidrs: list[Clean] = Field(
        default_factory=list,
        max_length=MAX_ALLOWED_CIDRS,
        description="Networks allowed besides your running instances and clusters",
    )
    restore_from: Clean | None = Field(
        None, max_length=40, description="A completed backup (dbbak_…) to restore into it"
    )


class ConnectionOut(ResponseModel):
    host: str | None
    port: int | None
    dbname: str
    user: str
    sslmode: str = "verify-full"
    ca_url: str
    uri: str | None = Field(description="The connection string without the password")


class DatabaseOut(ResponseModel):
    object: str = "database"
    id: str
    name: str
    version: str
    preset: str
    vcpus: int
    ram_gib: int
    storage_gib: int
    allowed_cidrs: list[str]
    state: str
    reason: str | None
    health: str | None
    health_at: Time | None
    used_mib: int | None
    node_id: str | None
    restore_from: str | None
    connection: ConnectionOut
    created_at: Time
    running_at: Time | None
    deleted_at: Time | None

    @classmethod
    def of(cls, row: DatabaseRow) -> DatabaseOut:
        preset = PRESETS[row.preset]
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            preset=row.preset,
            vcpus=preset.vcpus,
            ram_gib=preset.ram_gib,
            storage_gib=row.storage_gib,
            allowed_cidrs=list(row.allowed_cidrs or []),
            state=row.state,
            reason=row.reason,
            health=row.health,
            health_at=row.health_at,
            used_mib=row.used_mib,
            node_id=row.node_id,
            restore_from=row.restore_from,
            connection=ConnectionOut(
                host=row.host,
                port=row.port,
                dbname=row.name,
                user=row.db_user,
                ca_url=f"{API_PATH}/{row.id}/ca",
                uri=connection_uri(row, None),
            ),
            created_at=row.created_at,
            running_at=row.running_at,
            deleted_at=row.deleted_at,
        )


def connection_uri(row: DatabaseRow, password: str | None) -> str | None:
    """``postgresql://user[:password]@host:port/db?sslmode=verify-full`` once placed."""
    if row.host is None or row.port is None:
        return None
    secret = "" if password is None else ":" + quote(password, safe="")
    host = f"[{row.host}]" if ":" in row.host else row.host
    return f"postgresql://{row.db_user}{secret}@{host}:{row.port}/{row.name}?sslmode=verify-full"


class DatabaseCreated(DatabaseOut):
    """The create answer: the only one that carries the password."""

    password: str | None = Field(
        description="Shown once; the platform keeps it sealed (null in an idempotent replay)"
    )
    connection_string: str | None = Field(
        description="postgresql://user:password@host:port/db?sslmode=verify-full (once placed;"
        " the host and port are known when the database leaves provisioning)"
    )


class BackupOut(ResponseModel):
    object: str = "database_backup"
    id: str
    database_id: str
    kind: str
    state: str
    reason: str | None
    size_bytes: int | None
    created_at: Time
    completed_at: Time | None

    @classmethod
    def of(cls, row: DatabaseBackupRow) -> BackupOut:
        return cls.model_validate(row, from_attributes=True)


class PresetOut(ResponseModel):
    name: str
    vcpus: int
    ram_gib: int
    max_connections: int

    @classmethod
    def of(cls, p: Preset) -> PresetOut:
        return cls(name=p.name, vcpus=p.vcpus, ram_gib=p.ram_gib, max_connections=p.max_connections)


class DatabaseOptionsOut(ResponseModel):
    object: str = "database_options"
    versions: list[str] = Field(description="PostgreSQL major versions the service nodes have")
    presets: list[PresetOut]
    storage_gib_min: int
    storage_gib_max: int
