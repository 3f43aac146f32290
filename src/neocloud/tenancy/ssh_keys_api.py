"""SSH key routes: ``/ssh-keys`` (add, list, read, delete); the rules are in
``neocloud.tenancy.ssh_keys``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query

from neocloud.tenancy import ssh_keys
from neocloud.tenancy.schemas import SshKeyCreate, SshKeyDeleted, SshKeyOut
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["ssh keys"]
SshKeyId = Annotated[str, Path(max_length=40)]


@router.post("/ssh-keys", response_model=SshKeyOut, status_code=201, tags=TAGS)
def add_ssh_key(ctx: Ctx, caller: Caller, body: SshKeyCreate) -> SshKeyOut:
    """Add an SSH public key to your organization (role member or higher); instances and
    clusters name it in ``ssh_key_ids``. A bad key is a 422 naming ``public_key``; a name or a
    key the org has already, or an org at its 100 keys, a 409."""
    row = ssh_keys.add_ssh_key(
        db=ctx.db, clock=ctx.clock, actor=caller, name=body.name, public_key=body.public_key
    )
    return SshKeyOut.model_validate(row, from_attributes=True)


@router.get("/ssh-keys", response_model=ListOut[SshKeyOut], tags=TAGS)
def list_ssh_keys(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    org_id: Annotated[str | None, Query(max_length=40, description="Default: your org")] = None,
) -> ListOut[SshKeyOut]:
    """Your organization's SSH keys, oldest first (operator staff: any org's)."""
    page = ssh_keys.list_ssh_keys(
        db=ctx.db, actor=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[SshKeyOut.model_validate(r, from_attributes=True) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/ssh-keys/{ssh_key_id}", response_model=SshKeyOut, tags=TAGS)
def get_ssh_key(ctx: Ctx, caller: Caller, ssh_key_id: SshKeyId) -> SshKeyOut:
    row = ssh_keys.get_ssh_key(db=ctx.db, actor=caller, ssh_key_id=ssh_key_id)
    return SshKeyOut.model_validate(row, from_attributes=True)


@router.delete("/ssh-keys/{ssh_key_id}", response_model=SshKeyDeleted, tags=TAGS)
def delete_ssh_key(ctx: Ctx, caller: Caller, ssh_key_id: SshKeyId) -> SshKeyDeleted:
    """Delete an SSH key (its owner, or an org admin). Nodes already provisioned with it keep
    it until their instance ends."""
    row = ssh_keys.delete_ssh_key(db=ctx.db, actor=caller, ssh_key_id=ssh_key_id)
    return SshKeyDeleted(id=row.id, fingerprint=row.fingerprint)
