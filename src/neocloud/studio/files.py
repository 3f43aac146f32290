"""Studio files: an org's uploaded JSONL (``fine-tune``, ``batch``) and the system's outputs
(``batch_output``), as OpenAI's ``/v1/files`` has them.

Metadata is a ``studio_files`` row; content goes through a ``FileStore`` (never the database).
A caller sees its own org's files (operator staff see every org's); another org's file is 404
``file_not_found``, as one that does not exist. Uploads are checked line by line
(``studio.jsonl``) and bounded per file and per org (``Limits``, from the settings).

Other parts of the studio use ``read_content`` (a file's bytes for an org) and
``store_output_file`` (a file the system makes, e.g. a batch's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from neocloud.kernel.ids import random_id
from neocloud.kernel.settings import Settings
from neocloud.studio.filestore import FileStore
from neocloud.studio.jsonl import check_jsonl
from neocloud.studio.tables import StudioFileRow

FILENAME_MAX = 255
LIST_LIMIT_MAX = 10_000  # OpenAI's bound on /v1/files?limit


class Purpose(StrEnum):
    FINE_TUNE = "fine-tune"
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"  # made by the system, never uploaded


UPLOAD_PURPOSES = (Purpose.FINE_TUNE, Purpose.BATCH)


@dataclass(frozen=True, slots=True)
class Limits:
    file_max_bytes: int
    org_max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.studio_file_max_bytes, settings.studio_org_files_max_bytes)


def new_file_id() -> str:
    return random_id("file", sep="-")


def file_out(row: StudioFileRow) -> dict[str, Any]:
    """OpenAI's file object."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "expires_at": None,
        "status_details": None,
    }


def create_file(
    *,
    db: Database,
    clock: Clock,
    store: FileStore,
    limits: Limits,
    principal: Principal,
    filename: str,
    purpose: str,
    content: bytes,
) -> StudioFileRow:
    """Upload a file for the caller's org after checking its purpose, size and every line."""
    if purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(f"'{p.value}'" for p in UPLOAD_PURPOSES)
        raise InvalidRequest(
            f"{purpose!r} is not a supported purpose; use one of {allowed}",
            code="invalid_purpose",
            param="purpose",
        )
    if not filename or len(filename) > FILENAME_MAX or any(ord(c) < 32 for c in filename):
        raise InvalidRequest(
            f"the file name must be 1 to {FILENAME_MAX} printable characters",
            code="invalid_filename",
            param="file",
        )
    if len(content) > limits.file_max_bytes:
        raise PayloadTooLarge(
            f"the file is {len(content)} bytes; a file may have at most {limits.file_max_bytes}",
            code="file_too_large",
            param="file",
        )
    report = check_jsonl(content, purpose)
    if report.problems:
        shown = "; ".join(f"line {p.line}: {p.message}" for p in report.problems)
        raise InvalidRequest(
            f"the file is not valid JSONL for purpose {purpose!r}: {shown}",
            code="invalid_file_format",
            param="file",
            details={"errors": [p.as_dict() for p in report.problems]},
        )
    return _insert(
        db=db,
        clock=clock,
        store=store,
        org_id=principal.org_id,
        filename=filename,
        purpose=purpose,
        content=content,
        lines=report.lines,
        created_by=principal.key_id,
        org_max_bytes=limits.org_max_bytes,
    )


def store_output_file(
    *,
    db: Database,
    clock: Clock,
    store: FileStore,
    org_id: str,
    filename: str,
    content: bytes,
    purpose: str = Purpose.BATCH_OUTPUT,
) -> StudioFileRow:
    """A file the system makes for ``org_id`` (a batch's output or error file); not checked
    against the org's total, which bounds what callers upload."""
    return _insert(
        db=db,
        clock=clock,
        store=store,
        org_id=org_id,
        filename=filename,
        purpose=purpose,
        content=content,
        lines=content.count(b"\n"),
        created_by=None,
        org_max_bytes=None,
    )


def _insert(
    *,
    db: Database,
    clock: Clock,
    store: FileStore,
    org_id: str,
    filename: str,
    purpose: str,
    content: bytes,
    lines: int,
    created_by: str | None,
    org_max_bytes: int | None,
) -> StudioFileRow:
    file_id = new_file_id()
    key = f"{org_id}/{file_id}"
    store.put(key, content)  # first: a row never names content that is not there
    try:
        with db.transaction() as s:
            if org_max_bytes is not None:
                used = _org_bytes(s, org_id)
                if used + len(content) > org_max_bytes:
                    raise PayloadTooLarge(
                        f"the organization's files hold {used} bytes; with this one they would "
                        f"pass its limit of {org_max_bytes}: delete files first",
                        code="org_files_limit",
                        param="file",
                        details={"used_bytes": used, "limit_bytes": org_max_bytes},
                    )
            row = StudioFileRow(
                id=file_id,
                org_id=org_id,
                filename=filename,
                purpose=purpose,
                bytes=len(content),
                lines=lines,
                status="processed",
                storage_key=key,
                created_by=created_by,
                created_at=clock.now(),
            )
            s.add(row)
            s.flush()
            s.expunge(row)
            return row
    except BaseException:
        store.delete(key)
        raise


def _org_bytes(s: Session, org_id: str) -> int:
    total = s.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(StudioFileRow.bytes), 0)).where(
            StudioFileRow.org_id == org_id
        )
    )
    return int(total or 0)


def _visible(s: Session, principal: Principal, file_id: str) -> StudioFileRow:
    row = s.get(StudioFileRow, file_id)
    if row is None or not (principal.is_operator or row.org_id == principal.org_id):
        raise NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")
    return row


def get_file(*, db: Database, principal: Principal, file_id: str) -> StudioFileRow:
    with db.transaction() as s:
        row = _visible(s, principal, file_id)
        s.expunge(row)
        return row


def find_org_file(*, db: Database, org_id: str, file_id: str) -> StudioFileRow | None:
    """``org_id``'s file ``file_id``, or None (another org's file is None too)."""
    with db.transaction() as s:
        row = s.get(StudioFileRow, file_id)
        if row is None or row.org_id != org_id:
            return None
        s.expunge(row)
        return row


def read_content(*, db: Database, store: FileStore, org_id: str, file_id: str) -> bytes:
    """The bytes of ``org_id``'s file ``file_id``; 404 ``file_not_found`` otherwise."""
    row = find_org_file(db=db, org_id=org_id, file_id=file_id)
    if row is None:
        raise NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")
    return store.get(row.storage_key)


def file_content(
    *, db: Database, store: FileStore, principal: Principal, file_id: str
) -> tuple[StudioFileRow, bytes]:
    row = get_file(db=db, principal=principal, file_id=file_id)
    return row, store.get(row.storage_key)


def list_files(
    *,
    db: Database,
    principal: Principal,
    after: str | None,
    limit: int,
    order: str,
    purpose: str | None,
) -> tuple[list[StudioFileRow], bool]:
    """A page of the caller's org's files by ``created_at`` (``order``: asc or desc), the page
    starting after the file ``after``; and whether more follow."""
    with db.transaction() as s:
        q = sa.select(StudioFileRow).where(StudioFileRow.org_id == principal.org_id)
        if purpose is not None:
            q = q.where(StudioFileRow.purpose == purpose)
        desc = order == "desc"
        if after is not None:
            cursor = s.get(StudioFileRow, after)
            if cursor is None or cursor.org_id != principal.org_id:
                raise InvalidRequest(
                    f"no file {after!r} to list after", code="invalid_cursor", param="after"
                )
            at, col = cursor.created_at, StudioFileRow.created_at
            if desc:
                q = q.where(sa.or_(col < at, sa.and_(col == at, StudioFileRow.id < after)))
            else:
                q = q.where(sa.or_(col > at, sa.and_(col == at, StudioFileRow.id > after)))
        columns = (StudioFileRow.created_at, StudioFileRow.id)
        q = q.order_by(*(c.desc() if desc else c.asc() for c in columns)).limit(limit + 1)
        rows = list(s.scalars(q))
        for row in rows:
            s.expunge(row)
    return rows[:limit], len(rows) > limit


def delete_file(*, db: Database, store: FileStore, principal: Principal, file_id: str) -> None:
    """Delete the caller's org's file and its content."""
    with db.transaction() as s:
        row = _visible(s, principal, file_id)
        if row.org_id != principal.org_id and not principal.is_operator_admin:
            raise PermissionDenied(  # operator staff: they see every org's files, change none
                "only an operator admin may delete another organization's file",
                code="operator_admin_only",
            )
        key = row.storage_key
        s.delete(row)
    store.delete(key)
