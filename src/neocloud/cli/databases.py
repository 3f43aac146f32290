"""CLI for managed PostgreSQL: ``neocloud databases create|list|show|delete|backup|backups|
restore|ca|options`` (``neocloud db`` stays the platform's own migrations).

Tables for people, ``--json`` (the API's objects) for scripts. ``create`` and ``restore`` print
the password and the connection string once: the platform never shows them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from neocloud.cli.output import Column, api_call, err, print_list, print_object, take
from neocloud.cli.state import STATE

databases_app = typer.Typer(
    help="Managed PostgreSQL databases on the platform's service nodes.", no_args_is_help=True
)
APPS: dict[str, typer.Typer] = {"databases": databases_app}

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
DatabaseArg = Annotated[str, typer.Argument(help="Database id (db_…) or name")]
COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("VERSION", "version"),
    ("PRESET", "preset"),
    ("STORAGE GIB", "storage_gib"),
    ("STATE", "state"),
    ("HEALTH", "health"),
    ("CONNECT", lambda d: d["connection"]["uri"]),
]
SHOWN: list[Column] = [
    *COLUMNS,
    ("reason", "reason"),
    ("vcpus", "vcpus"),
    ("ram_gib", "ram_gib"),
    ("allowed_cidrs", lambda d: ", ".join(d["allowed_cidrs"]) or "-"),
    ("used_mib", "used_mib"),
    ("restore_from", "restore_from"),
    ("created_at", "created_at"),
    ("running_at", "running_at"),
]
BACKUP_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("KIND", "kind"),
    ("STATE", "state"),
    ("SIZE BYTES", "size_bytes"),
    ("CREATED", "created_at"),
    ("REASON", "reason"),
]


def database_id(ref: str) -> str:
    """``ref`` as a database id: an id as it is, else the one live database of that name."""
    if ref.startswith("db_"):
        return ref
    found = [d for d in STATE.client().databases.iter() if d["name"] == ref]
    if len(found) != 1:
        err.print(f"no database named {ref!r}" if not found else f"{ref!r} names several")
        raise typer.Exit(1)
    return str(found[0]["id"])


def _create(as_json: bool, name: str, **kwargs: Any) -> None:
    made = STATE.client().databases.create(name, **kwargs)
    if as_json:
        print_object(made, as_json=True)
        return
    print_object(made, as_json=False, fields=SHOWN)
    err.print("the password is shown this once; keep the connection string:")
    typer.echo(made["connection_string"])


Version = Annotated[str, typer.Option("--version", help="PostgreSQL major version (options)")]
Storage = Annotated[int, typer.Option("--storage-gib", min=1, max=4096, help="Disk, GiB")]
Preset = Annotated[str, typer.Option("--preset", help="small, medium or large (options)")]
User = Annotated[str, typer.Option("--user", help="The role you log in as")]
Cidrs = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-cidr",
        help="A network allowed besides your instances and clusters (repeatable)",
    ),
]


@databases_app.command("create")
@api_call
def databases_create(
    name: Annotated[str, typer.Argument(help="1-63 of a-z, 0-9, _; starting with a letter")],
    version: Version,
    storage_gib: Storage,
    preset: Preset = "small",
    user: User = "app",
    allowed_cidr: Cidrs = None,
    as_json: Json = False,
) -> None:
    """Create a database; prints its password and connection string once."""
    _create(
        as_json,
        name,
        version=version,
        storage_gib=storage_gib,
        preset=preset,
        user=user,
        allowed_cidrs=allowed_cidr or [],
    )


@databases_app.command("restore")
@api_call
def databases_restore(
    backup: Annotated[str, typer.Argument(help="Backup id (dbbak_…), see `databases backups`")],
    name: Annotated[str, typer.Argument(help="The NEW database's name")],
    version: Version,
    storage_gib: Storage,
    preset: Preset = "small",
    user: User = "app",
    allowed_cidr: Cidrs = None,
    as_json: Json = False,
) -> None:
    """Restore a backup into a new database (on the backup's node)."""
    _create(
        as_json,
        name,
        version=version,
        storage_gib=storage_gib,
        preset=preset,
        user=user,
        allowed_cidrs=allowed_cidr or [],
        restore_from=backup,
    )


@databases_app.command("list")
@api_call
def databases_list(
    deleted: Annotated[bool, typer.Option("--deleted", help="Deleted ones too")] = False,
    as_json: Json = False,
) -> None:
    """Your org's databases."""
    rows, more = take(STATE.client().databases.iter(deleted=deleted), 1000)
    print_list(rows, COLUMNS, as_json=as_json, more=more)


@databases_app.command("show")
@api_call
def databases_show(ref: DatabaseArg, as_json: Json = False) -> None:
    """A database: state, reason, health, where to connect (never its password)."""
    got = STATE.client().databases.get(database_id(ref))
    print_object(got, as_json=as_json, fields=SHOWN)


@databases_app.command("delete")
@api_call
def databases_delete(ref: DatabaseArg, as_json: Json = False) -> None:
    """Delete a database: its server, data directory, backups and OS user go."""
    got = STATE.client().databases.delete(database_id(ref))
    print_object(got, as_json=as_json, fields=COLUMNS)


@databases_app.command("backup")
@api_call
def databases_backup(ref: DatabaseArg, as_json: Json = False) -> None:
    """Back a running database up now (pg_dump)."""
    got = STATE.client().databases.backup(database_id(ref))
    print_object(got, as_json=as_json, fields=BACKUP_COLUMNS)


@databases_app.command("backups")
@api_call
def databases_backups(ref: DatabaseArg, as_json: Json = False) -> None:
    """A database's backups, oldest first."""
    got = STATE.client().databases.backups(database_id(ref), limit=1000)
    print_list(got["data"], BACKUP_COLUMNS, as_json=as_json, more=bool(got["has_more"]))


@databases_app.command("ca")
@api_call
def databases_ca(
    ref: DatabaseArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the PEM here (default: stdout)")
    ] = None,
) -> None:
    """The CA certificate to verify the server with (sslrootcert=, sslmode=verify-full)."""
    pem = STATE.client().databases.ca_certificate(database_id(ref))
    if output is None:
        typer.echo(pem, nl=False)
    else:
        output.write_text(pem)


@databases_app.command("options")
@api_call
def databases_options(as_json: Json = False) -> None:
    """The versions the service nodes have, the presets and the storage bounds."""
    got = STATE.client().databases.options()
    if as_json:
        print_object(got, as_json=True)
        return
    typer.echo(f"versions: {', '.join(got['versions']) or '(none yet)'}")
    for p in got["presets"]:
        typer.echo(f"preset {p['name']}: {p['vcpus']} vCPUs, {p['ram_gib']} GiB")
    typer.echo(f"storage: {got['storage_gib_min']}-{got['storage_gib_max']} GiB")
