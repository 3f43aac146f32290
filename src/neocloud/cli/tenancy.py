"""CLI for tenancy: ``neocloud orgs|projects|users|keys|ssh-keys|quotas|audit …``.

Tables for people, ``--json`` (the API's objects) for scripts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from neocloud.cli.output import (
    Column,
    api_call,
    err,
    out,
    print_json,
    print_list,
    print_object,
    take,
)
from neocloud.cli.resolve import resolve
from neocloud.cli.state import ORG_HELP, STATE
from neocloud.cli.times import FORMS, parse_when
from neocloud.kernel.auth import Role

orgs_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
projects_app = typer.Typer(help="Projects inside an organization.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their roles in an organization.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
ssh_keys_app = typer.Typer(
    help="SSH public keys for logging into instances and clusters.", no_args_is_help=True
)
quotas_app = typer.Typer(help="GPU quotas per organization.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of mutating calls.", no_args_is_help=True)

APPS: dict[str, typer.Typer] = {
    "orgs": orgs_app,
    "projects": projects_app,
    "users": users_app,
    "keys": keys_app,
    "ssh-keys": ssh_keys_app,
    "quotas": quotas_app,
    "audit": audit_app,
}

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows")]
All = Annotated[bool, typer.Option("--all", help="Every row, page after page (no --limit)")]
Org = Annotated[str | None, typer.Option("--org", help=ORG_HELP)]
OrgArg = Annotated[str, typer.Argument(help="An organization's id, slug or name")]
UserArg = Annotated[str, typer.Argument(help="User id (usr_…)")]
ProjectArg = Annotated[str, typer.Argument(help="Project id (prj_…)")]
KeyRef = Annotated[str, typer.Argument(help="API key id (key_…) or unique name")]
SshKeyRef = Annotated[str, typer.Argument(help="SSH key id (sshkey_…) or name")]
GpuModelArg = Annotated[str, typer.Argument(help="GPU model (H100-SXM-80GB, B200, …)")]
LimitGpusArg = Annotated[int, typer.Argument(help="How many GPUs at most, at once")]
RoleArg = Annotated[Role, typer.Argument(help="The role in the organization")]

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
SSH_KEY_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("TYPE", "key_type"),
    ("BITS", "bits"),
    ("FINGERPRINT", "fingerprint"),
    ("CREATED BY", "created_by"),
    ("CREATED", "created_at"),
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


def _show_list(rows: Any, columns: list[Column], as_json: bool, limit: int | None = None) -> None:
    """At most ``limit`` rows (None: all of them), saying so on stderr when more exist."""
    taken, more = take(rows, limit)
    print_list(taken, columns, as_json=as_json, more=more)


def key_id(ref: str) -> str:
    """The id of the key ``ref`` names (an id, or the name of exactly one of your keys)."""
    client = STATE.client()
    return resolve(ref, prefix="key", candidates=lambda _: client.keys.iter())


# ---------------------------------------------------------------------------------------- orgs


@orgs_app.command("list")
@api_call
def orgs_list(as_json: Json = False, limit: Limit = 1000, all_rows: All = False) -> None:
    """List organizations (operators see all)."""
    _show_list(STATE.client().orgs.iter(), ORG_COLUMNS, as_json, None if all_rows else limit)


@orgs_app.command("get", help="An organization: slug, name, whether it is the operator, when made.")
@api_call
def orgs_get(org: OrgArg, as_json: Json = False) -> None:
    print_object(STATE.client().orgs.get(STATE.org_id(org)), as_json=as_json)


@orgs_app.command("create")
@api_call
def orgs_create(
    name: Annotated[str, typer.Argument(help="The organization's display name")],
    slug: Annotated[str | None, typer.Option(help="URL-safe name (default: from the name)")] = None,
    owner_email: Annotated[str | None, typer.Option(help="Make this user the owner")] = None,
    as_json: Json = False,
) -> None:
    """Create an organization (operator admins)."""
    org = STATE.client().orgs.create(name, slug=slug, owner_email=owner_email)
    print_object(org, as_json=as_json, fields=ORG_COLUMNS)


@orgs_app.command("update", help="Rename an organization (operator admins, its owner).")
@api_call
def orgs_update(
    org: OrgArg, name: Annotated[str, typer.Option(help="New name")], as_json: Json = False
) -> None:
    print_object(STATE.client().orgs.update(STATE.org_id(org), name=name), as_json=as_json)


# ------------------------------------------------------------------------------------ projects


@projects_app.command("list", help="An organization's projects, oldest first.")
@api_call
def projects_list(
    org: Org = None, as_json: Json = False, limit: Limit = 1000, all_rows: All = False
) -> None:
    rows = STATE.client().projects.iter(STATE.org_id(org))
    _show_list(rows, PROJECT_COLUMNS, as_json, None if all_rows else limit)


@projects_app.command("get", help="A project: name, organization, description, when made.")
@api_call
def projects_get(project_id: ProjectArg, as_json: Json = False) -> None:
    print_object(STATE.client().projects.get(project_id), as_json=as_json)


@projects_app.command("create", help="Create a project in an organization (its admins).")
@api_call
def projects_create(
    name: Annotated[str, typer.Argument(help="The project's name, unique in its org")],
    org: Org = None,
    description: Annotated[str | None, typer.Option(help="What the project is for")] = None,
    as_json: Json = False,
) -> None:
    project = STATE.client().projects.create(STATE.org_id(org), name, description=description)
    print_object(project, as_json=as_json, fields=PROJECT_COLUMNS)


# --------------------------------------------------------------------------------------- users


@users_app.command("list", help="An organization's members and their roles.")
@api_call
def users_list(
    org: Org = None, as_json: Json = False, limit: Limit = 1000, all_rows: All = False
) -> None:
    rows = STATE.client().users.iter(STATE.org_id(org))
    _show_list(rows, USER_COLUMNS, as_json, None if all_rows else limit)


@users_app.command("add")
@api_call
def users_add(
    email: Annotated[str, typer.Argument(help="The user's email address")],
    org: Org = None,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    role: Annotated[Role, typer.Option(help="The role in the organization")] = Role.MEMBER,
    as_json: Json = False,
) -> None:
    """Add a user to an organization (created if the email is new)."""
    user = STATE.client().users.add(STATE.org_id(org), email, name=name, role=role.value)
    print_object(user, as_json=as_json, fields=USER_COLUMNS)


@users_app.command("set-role", help="Change a member's role in an organization (its admins).")
@api_call
def users_set_role(user_id: UserArg, role: RoleArg, org: Org = None, as_json: Json = False) -> None:
    user = STATE.client().users.set_role(STATE.org_id(org), user_id, role.value)
    print_object(user, as_json=as_json, fields=USER_COLUMNS)


@users_app.command("remove")
@api_call
def users_remove(user_id: UserArg, org: Org = None) -> None:
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
    all_rows: All = False,
) -> None:
    """List your keys (or, with --org, the org's)."""
    rows = STATE.client().keys.iter(org_id=STATE.maybe_org_id(org))
    _show_list(rows, KEY_COLUMNS, as_json, None if all_rows else limit)


@keys_app.command("get")
@api_call
def keys_get(key: KeyRef, as_json: Json = False) -> None:
    """An API key: name, prefix, role, owner, last use, expiry (never its secret)."""
    print_object(STATE.client().keys.get(key_id(key)), as_json=as_json)


@keys_app.command("create")
@api_call
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to know the key by (e.g. ci)")],
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
    if key.get("secret") is None:  # a replay: the first answer, with the secret, was lost
        if as_json:
            print_json(key)
        err.print(
            f"[red]error[/red] key {key['id']} was created by an earlier try of this request, "
            "whose answer was lost; a secret is shown only once, so revoke it "
            f"(`neocloud keys revoke {key['id']}`) and create another",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if as_json:
        print_json(key)
        return
    print_object(key, as_json=False, fields=KEY_COLUMNS[:5])
    err.print("[bold]Secret (shown once; store it now):[/bold]")
    out.print(key["secret"], highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@api_call
def keys_revoke(key: KeyRef, as_json: Json = False) -> None:
    """Revoke an API key: it stops working at once, for good."""
    print_object(STATE.client().keys.revoke(key_id(key)), as_json=as_json, fields=KEY_COLUMNS)


# ------------------------------------------------------------------------------------ ssh keys

# Read at most this much of a key file: a public key line is at most 16 KiB.
SSH_KEY_FILE_MAX = 16_384


def ssh_key_id(ref: str) -> str:
    """The id of the SSH key ``ref`` names (an id, or the name of one of your org's keys)."""
    client = STATE.client()
    return resolve(ref, prefix="sshkey", candidates=lambda _: client.ssh_keys.iter())


def read_public_key(file: Path | None, key: str | None) -> str:
    """The key text from ``--key`` or ``--file`` (``-``: stdin). A file that holds a private
    key is refused here, before anything is sent."""
    if (file is None) == (key is None):
        raise typer.BadParameter("give the key with exactly one of --file or --key")
    if key is not None:
        return key
    assert file is not None
    if str(file) == "-":
        text = sys.stdin.read(SSH_KEY_FILE_MAX + 1)
    else:
        path = file.expanduser()
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                text = handle.read(SSH_KEY_FILE_MAX + 1)
        except OSError as exc:
            message = f"cannot read {path}: {exc.strerror}"
            raise typer.BadParameter(message, param_hint="--file") from None
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        hint = "" if str(file) == "-" else f" (e.g. {file}.pub)"
        raise typer.BadParameter(
            f"this looks like a PRIVATE key: never share it; give the public key file{hint}",
            param_hint="--file",
        )
    if len(text) > SSH_KEY_FILE_MAX:
        raise typer.BadParameter(
            f"a public key is at most {SSH_KEY_FILE_MAX} bytes; is this a key file?",
            param_hint="--file",
        )
    return text.strip()


@ssh_keys_app.command("add")
@api_call
def ssh_keys_add(
    name: Annotated[str, typer.Argument(help="A name for the key, unique in your org")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="The public key file (e.g. ~/.ssh/id_ed25519.pub); - for stdin"
        ),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="The public key line itself ('ssh-ed25519 AAAA…')")
    ] = None,
    as_json: Json = False,
) -> None:
    """Add an SSH public key to your org; name it when you create instances and clusters."""
    text = read_public_key(file, key)
    print_object(STATE.client().ssh_keys.add(name, text), as_json=as_json, fields=SSH_KEY_COLUMNS)


@ssh_keys_app.command("list")
@api_call
def ssh_keys_list(
    org: Annotated[
        str | None, typer.Option("--org", help="Another org's keys (operator staff; id or slug)")
    ] = None,
    as_json: Json = False,
    limit: Limit = 1000,
    all_rows: All = False,
) -> None:
    """Your org's SSH keys, oldest first."""
    rows = STATE.client().ssh_keys.iter(org_id=STATE.maybe_org_id(org))
    _show_list(rows, SSH_KEY_COLUMNS, as_json, None if all_rows else limit)


@ssh_keys_app.command("get")
@api_call
def ssh_keys_get(ref: SshKeyRef, as_json: Json = False) -> None:
    """An SSH key: name, type, size, fingerprint, owner and the public key line."""
    print_object(STATE.client().ssh_keys.get(ssh_key_id(ref)), as_json=as_json)


@ssh_keys_app.command("delete")
@api_call
def ssh_keys_delete(ref: SshKeyRef, as_json: Json = False) -> None:
    """Delete an SSH key (its owner or an org admin); running instances keep it until they end."""
    gone = STATE.client().ssh_keys.delete(ssh_key_id(ref))
    if as_json:
        print_json(gone)
        return
    err.print(f"{gone['id']} deleted ({gone['fingerprint']})", highlight=False)


# -------------------------------------------------------------------------------------- quotas


@quotas_app.command("list")
@api_call
def quotas_list(org: Org = None, as_json: Json = False) -> None:
    """An org's effective quota per GPU model."""
    _show_list(STATE.client().quotas.list(STATE.org_id(org))["data"], QUOTA_COLUMNS, as_json)


@quotas_app.command("set")
@api_call
def quotas_set(
    gpu_model: GpuModelArg, limit_gpus: LimitGpusArg, org: Org = None, as_json: Json = False
) -> None:
    """Override an org's quota for one GPU model (operator admins)."""
    quota = STATE.client().quotas.set(STATE.org_id(org), gpu_model, limit_gpus)
    print_object(quota, as_json=as_json, fields=QUOTA_COLUMNS)


@quotas_app.command("reset")
@api_call
def quotas_reset(gpu_model: GpuModelArg, org: Org = None) -> None:
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
def quotas_set_default(
    gpu_model: GpuModelArg, limit_gpus: LimitGpusArg, as_json: Json = False
) -> None:
    """Set the default quota of a GPU model for every org without an override."""
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
    since: Annotated[str | None, typer.Option(help=f"Only calls since: {FORMS}")] = None,
    as_json: Json = False,
    limit: Limit = 100,
    all_rows: All = False,
) -> None:
    """Mutating calls, newest first."""
    since_at = parse_when(since, STATE.clock.now()) if since else None
    rows = STATE.client().audit.iter(
        org_id=STATE.maybe_org_id(org),
        actor=actor,
        method=method.upper() if method else None,
        since=since_at,
    )
    _show_list(rows, AUDIT_COLUMNS, as_json, None if all_rows else limit)
