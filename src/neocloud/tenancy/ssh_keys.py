"""Tenants' SSH public keys: add, list, read, delete; and resolve ids to key lines for compute.

A key belongs to an org and is owned by the user who added it. Any member who may create
instances (role member or higher) adds keys; everyone in the org reads them (a public key is no
secret); the owner or an org admin deletes one. Another org's key is not found, whoever asks,
and ``resolve_public_keys`` answers another org's id exactly as an unknown one, so no tenant can
learn that a key id exists elsewhere. An instance gets the key lines it was created with:
deleting a key later does not take it off nodes already provisioned.

Bounds: a name of 1 to 64 characters, unique in its org; a key at most once per org (by
fingerprint); at most ``MAX_KEYS_PER_ORG`` keys per org (409 ``ssh_key_limit_reached``). The
key text is parsed and normalized by ``neocloud.tenancy.ssh_key_format``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.tenancy.access import org_row, require_read
from neocloud.tenancy.ssh_key_format import ParsedKey, parse_public_key
from neocloud.tenancy.tables import OrgRow, SshKeyRow

MAX_KEYS_PER_ORG = 100
NAME_MAX = 64
IDS_PARAM = "ssh_key_ids"


def add_ssh_key(
    *, db: Database, clock: Clock, actor: Principal, name: str, public_key: str
) -> SshKeyRow:
    """Add ``public_key`` (one OpenSSH line) to the caller's org under ``name``, owned by the
    caller. 422 naming ``public_key`` for a bad key, 409 for a name or key the org has already
    or past ``MAX_KEYS_PER_ORG`` keys."""
    org_id = actor.org_id
    actor.require_org_role(org_id, Role.MEMBER)
    name = _check_name(name)
    parsed = parse_public_key(public_key)
    row = SshKeyRow(
        id=new_id("sshkey"),
        org_id=org_id,
        created_by=actor.user_id,
        name=name,
        public_key=parsed.line,
        fingerprint=parsed.fingerprint,
        key_type=parsed.key_type,
        bits=parsed.bits,
        created_at=clock.now(),
    )
    try:
        with db.transaction() as s:
            # The org row's lock orders concurrent adds (PostgreSQL), so the count holds.
            s.execute(sa.select(OrgRow.id).where(OrgRow.id == org_id).with_for_update()).first()
            org_row(s, org_id)
            _check_free(s, org_id, name, parsed)
            s.add(row)
    except Conflict:
        # A concurrent add took the name or the key between the check and the insert: the
        # unique constraints refused it; say which, as the check would have.
        with db.transaction() as s:
            _check_free(s, org_id, name, parsed)
        raise
    return row


def list_ssh_keys(
    *, db: Database, actor: Principal, org_id: str | None = None, limit: int, after: str | None
) -> Page[SshKeyRow]:
    """The keys of the caller's org (or of ``org_id``: operator staff read any org's), oldest
    first."""
    org_id = org_id or actor.org_id
    require_read(actor, org_id)
    with db.transaction() as s:
        org_row(s, org_id)
        stmt = sa.select(SshKeyRow).where(SshKeyRow.org_id == org_id)
        return paginate(s, stmt, SshKeyRow.id, limit=limit, after=after)


def get_ssh_key(*, db: Database, actor: Principal, ssh_key_id: str) -> SshKeyRow:
    with db.transaction() as s:
        return _visible(s, actor, ssh_key_id)


def delete_ssh_key(*, db: Database, actor: Principal, ssh_key_id: str) -> SshKeyRow:
    """Delete a key (its owner, role member or higher; or an org admin); answers what it was.
    Nodes already provisioned with it keep it until their instance ends."""
    with db.transaction() as s:
        row = _visible(s, actor, ssh_key_id)
        own = row.created_by == actor.user_id and row.org_id == actor.org_id
        actor.require_org_role(row.org_id, Role.MEMBER if own else Role.ADMIN)
        s.delete(row)
    return row


def resolve_public_keys(*, db: Database, org_id: str, ids: Sequence[str]) -> list[str]:
    """The OpenSSH lines of the keys ``ids`` names, in that order, once each.

    422 ``ssh_key_not_found`` naming ``ssh_key_ids`` and the first id that is not a key of
    ``org_id`` (unknown and another org's read the same)."""
    with db.transaction() as s:
        return public_keys_in(s, org_id=org_id, ids=ids)


def public_keys_in(s: Session, *, org_id: str, ids: Sequence[str]) -> list[str]:
    """``resolve_public_keys`` inside the caller's transaction ``s``."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    found = dict(
        s.execute(
            sa.select(SshKeyRow.id, SshKeyRow.public_key).where(
                SshKeyRow.org_id == org_id, SshKeyRow.id.in_(wanted)
            )
        ).all()
    )
    for key_id in wanted:
        if key_id not in found:
            raise ValidationFailed(
                f"no SSH key {key_id[:64]}", code="ssh_key_not_found", param=IDS_PARAM
            )
    return [found[key_id] for key_id in wanted]


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise ValidationFailed(
            f"name must be 1 to {NAME_MAX} characters", code="invalid_name", param="name"
        )
    return name


def _check_free(s: Session, org_id: str, name: str, parsed: ParsedKey) -> None:
    """409 if the org has ``name`` or this key already, or is at its number of keys."""
    same_name = s.scalar(
        sa.select(SshKeyRow.id).where(SshKeyRow.org_id == org_id, SshKeyRow.name == name)
    )
    if same_name is not None:
        raise Conflict(
            f"the organization has an SSH key named {name!r} already ({same_name})",
            code="ssh_key_name_taken",
            param="name",
        )
    same_key = s.scalar(
        sa.select(SshKeyRow.id).where(
            SshKeyRow.org_id == org_id, SshKeyRow.fingerprint == parsed.fingerprint
        )
    )
    if same_key is not None:
        raise Conflict(
            f"the organization has this key already, as {same_key} ({parsed.fingerprint})",
            code="ssh_key_exists",
            param="public_key",
        )
    count = s.scalar(
        sa.select(sa.func.count()).select_from(SshKeyRow).where(SshKeyRow.org_id == org_id)
    )
    if count is not None and count >= MAX_KEYS_PER_ORG:
        raise Conflict(
            f"an organization has at most {MAX_KEYS_PER_ORG} SSH keys; delete one first",
            code="ssh_key_limit_reached",
            details={"limit": MAX_KEYS_PER_ORG, "count": count},
        )


def _visible(s: Session, actor: Principal, ssh_key_id: str) -> SshKeyRow:
    row = s.get(SshKeyRow, ssh_key_id)
    if row is None or not (actor.is_operator or row.org_id == actor.org_id):
        raise NotFound(f"no SSH key {ssh_key_id}", code="ssh_key_not_found", param="ssh_key_id")
    return row
