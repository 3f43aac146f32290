"""CLI for tenancy: ``neocloud orgs|projects|users|keys|quotas|audit …``.

Tables for people, ``--json`` (the API's objects) for scripts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from neocloud.cli.output import (
    Column,
    api_call,
    err,
    out,
    print_json,
    print_object,
    print_table,
)
from neocloud.cli.state import ORG_HELP, STATE

orgs_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
projects_app = typer.Typer(help="Projects inside an organization.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their roles in an organization.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
quotas_app = typer.Typer(help="GPU quotas per organization.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of mutating calls.", no_args_is_help=True)

APPS: dict[str, typer.Typer] = {
    "orgs": orgs_app,
    "projects": projects_app,
    "users": users_app,
    "keys": keys_app,
    "quotas": quotas_app,
    "audit": audit_app,
}

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows")]
Org = Annotated[str | None, typer.Option("--org", help=ORG_HELP)]
OrgArg = Annotated[str, typer.Argument(help="An organization's id, slug or name")]

ORG_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("SLUG", "slug"),
    ("NAME", "name"),
    ("OPERATOR", "is_operator"),
    ("CREATED", "created_at"),
]
PROJECT_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("ORG", "org_id"),
    ("CREATED", "created_at"),
]
USER_COLUMNS: list[Column] = [("ID", "id"), ("EMAIL", "email"), ("NAME", "name"), ("ROLE", "role")]
KEY_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("PREFIX", "prefix"),
    ("ROLE", "role"),
    ("USER", "user_id"),
    ("LAST USED", "last_used_at"),
    ("EXPIRES", "expires_at"),
    ("REVOKED", "revoked_at"),
]
QUOTA_COLUMNS: list[Column] = [
    ("GPU MODEL", "gpu_model"),
    ("LIMIT", "limit_gpus"),
    ("USAGE", "usage"),
    ("SOURCE", "source"),
    ("DEFAULT", "default_gpus"),
]
AUDIT_COLUMNS: list[Column] = [
    ("AT", "at"),
    ("METHOD", "method"),
    ("PATH", "path"),
    ("STATUS", "status_code"),
    ("ACTOR", "actor_user_id"),
    ("TARGET", "target_id"),
]


def _take(rows: Any, limit: int) -> list[dict[str, Any]]:
    taken: list[dict[str, Any]] = []
    for row in rows:
        if len(taken) >= limit:
            break
        taken.append(row)
    return taken


def _show_list(rows: list[dict[str, Any]], columns: list[Column], as_json: bool) -> None:
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns)


# ---------------------------------------------------------------------------------------- orgs


@orgs_app.command("list")
@api_call
def orgs_list(as_json: Json = False, limit: Limit = 1000) -> None:
    """List organizations (operators see all)."""
    _show_list(_take(STATE.client().orgs.iter(), limit), ORG_COLUMNS, as_json)


@orgs_app.command("get")
@api_call
def orgs_get(org: OrgArg, as_json: Json = False) -> None:
    print_object(STATE.client().orgs.get(STATE.org_id(org)), as_json=as_json)


@orgs_app.command("create")
@api_call
def orgs_create(
    name: str,
    slug: Annotated[str | None, typer.Option(help="URL-safe name (default: from the name)")] = None,
    owner_email: Annotated[str | None, typer.Option(help="Make this user the owner")] = None,
    as_json: Json = False,
) -> None:
    """Create an organization (operator admins)."""
    org = STATE.client().orgs.create(name, slug=slug, owner_email=owner_email)
    print_object(org, as_json=as_json, fields=ORG_COLUMNS)


@orgs_app.command("update")
@api_call
def orgs_update(
    org: OrgArg, name: Annotated[str, typer.Option(help="New name")], as_json: Json = False
) -> None:
    print_object(STATE.client().orgs.update(STATE.org_id(org), name=name), as_json=as_json)


# ------------------------------------------------------------------------------------ projects


@projects_app.command("list")
@api_call
def projects_list(org: Org = None, as_json: Json = False, limit: Limit = 1000) -> None:
    rows = STATE.client().projects.iter(STATE.org_id(org))
    _show_list(_take(rows, limit), PROJECT_COLUMNS, as_json)


@projects_app.command("get")
@api_call
def projects_get(project_id: str, as_json: Json = False) -> None:
    print_object(STATE.client().projects.get(project_id), as_json=as_json)


@projects_app.command("create")
@api_call
def projects_create(
    name: str,
    org: Org = None,
    description: Annotated[str | None, typer.Option(help="What the project is for")] = None,
    as_json: Json = False,
) -> None:
    project = STATE.client().projects.create(STATE.org_id(org), name, description=description)
    print_object(project, as_json=as_json, fields=PROJECT_COLUMNS)


# --------------------------------------------------------------------------------------- users


@users_app.command("list")
@api_call
def users_list(org: Org = None, as_json: Json = False, limit: Limit = 1000) -> None:
    rows = STATE.client().users.iter(STATE.org_id(org))
    _show_list(_take(rows, limit), USER_COLUMNS, as_json)


@users_app.command("add")
@api_call
def users_add(
    email: str,
    org: Org = None,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    role: Annotated[str, typer.Option(help="owner, admin, member or viewer")] = "member",
    as_json: Json = False,
) -> None:
    """Add a user to an organization (created if the email is new)."""
    user = STATE.client().users.add(STATE.org_id(org), email, name=name, role=role)
    print_object(user, as_json=as_json, fields=USER_COLUMNS)


@users_app.command("set-role")
@api_call
def users_set_role(user_id: str, role: str, org: Org = None, as_json: Json = False) -> None:
    user = STATE.client().users.set_role(STATE.org_id(org), user_id, role)
    print_object(user, as_json=as_json, fields=USER_COLUMNS)


@users_app.command("remove")
@api_call
def users_remove(user_id: str, org: Org = None) -> None:
    """Take a user out of an organization (their keys for it stop working)."""
    org_id = STATE.org_id(org)
    STATE.client().users.remove(org_id, user_id)
    err.print(f"{user_id} removed from {org_id}")


# ---------------------------------------------------------------------------------------- keys


@keys_app.command("list")
@api_call
def keys_list(
    org: Annotated[
        str | None,
        typer.Option("--org", help="Every key of this org (its admins; id, slug or name)"),
    ] = None,
    as_json: Json = False,
    limit: Limit = 1000,
) -> None:
    """List your keys (or, with --org, the org's)."""
    rows = STATE.client().keys.iter(org_id=STATE.maybe_org_id(org))
    _show_list(_take(rows, limit), KEY_COLUMNS, as_json)


@keys_app.command("get")
@api_call
def keys_get(key_id: str, as_json: Json = False) -> None:
    print_object(STATE.client().keys.get(key_id), as_json=as_json)


@keys_app.command("create")
@api_call
def keys_create(
    name: str,
    org: Org = None,
    user_id: Annotated[
        str | None,
        typer.Option(
            help="Default: you; in an org you are not a member of, its owner (admins may name "
            "another)"
        ),
    ] = None,
    role: Annotated[str | None, typer.Option(help="Cap the key's role")] = None,
    expires_at: Annotated[str | None, typer.Option(help="RFC 3339 time")] = None,
    as_json: Json = False,
) -> None:
    """Create an API key and print its secret (shown this once only)."""
    key = STATE.client().keys.create(
        name, org_id=STATE.maybe_org_id(org), user_id=user_id, role=role, expires_at=expires_at
    )
    if as_json:
        print_json(key)
        return
    print_object(key, as_json=False, fields=KEY_COLUMNS[:5])
    err.print("[bold]Secret (shown once; store it now):[/bold]")
    out.print(key["secret"], highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@api_call
def keys_revoke(key_id: str, as_json: Json = False) -> None:
    print_object(STATE.client().keys.revoke(key_id), as_json=as_json, fields=KEY_COLUMNS)


# -------------------------------------------------------------------------------------- quotas


@quotas_app.command("list")
@api_call
def quotas_list(org: Org = None, as_json: Json = False) -> None:
    """An org's effective quota per GPU model."""
    _show_list(STATE.client().quotas.list(STATE.org_id(org))["data"], QUOTA_COLUMNS, as_json)


@quotas_app.command("set")
@api_call
def quotas_set(gpu_model: str, limit_gpus: int, org: Org = None, as_json: Json = False) -> None:
    """Override an org's quota for one GPU model (operator admins)."""
    quota = STATE.client().quotas.set(STATE.org_id(org), gpu_model, limit_gpus)
    print_object(quota, as_json=as_json, fields=QUOTA_COLUMNS)


@quotas_app.command("reset")
@api_call
def quotas_reset(gpu_model: str, org: Org = None) -> None:
    """Drop an org's override so the default applies again."""
    STATE.client().quotas.reset(STATE.org_id(org), gpu_model)
    err.print(f"override of {gpu_model} removed")


@quotas_app.command("defaults")
@api_call
def quotas_defaults(as_json: Json = False) -> None:
    """The registered default quota per GPU model."""
    rows = list(STATE.client().iter("quota-defaults"))
    _show_list(rows, [("GPU MODEL", "gpu_model"), ("LIMIT", "limit_gpus")], as_json)


@quotas_app.command("set-default")
@api_call
def quotas_set_default(gpu_model: str, limit_gpus: int, as_json: Json = False) -> None:
    print_object(STATE.client().quotas.set_default(gpu_model, limit_gpus), as_json=as_json)


# --------------------------------------------------------------------------------------- audit


@audit_app.command("list")
@api_call
def audit_list(
    org: Annotated[
        str | None, typer.Option("--org", help="Only this org (id, slug or name)")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="A user or key id")] = None,
    method: Annotated[str | None, typer.Option(help="POST, PUT, PATCH or DELETE")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339 time")] = None,
    as_json: Json = False,
    limit: Limit = 100,
) -> None:
    """Mutating calls, oldest first."""
    rows = STATE.client().audit.iter(
        org_id=STATE.maybe_org_id(org),
        actor=actor,
        method=method.upper() if method else None,
        since=since,
    )
    _show_list(_take(rows, limit), AUDIT_COLUMNS, as_json)
