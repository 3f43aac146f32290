"""CLI for storage: ``neocloud fs create|list|show|resize|attach|detach|delete`` (tenants) and
``neocloud storage-pools create|list|show|delete`` (operators)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from neocloud.cli.output import Column, api_call, print_json, print_object, print_table
from neocloud.cli.state import STATE

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait until it has settled")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits at most")]
FsRef = Annotated[str, typer.Argument(help="The filesystem's id or name")]

fs_app = typer.Typer(
    help="Shared filesystems: attach one to instances and clusters.", no_args_is_help=True
)
pools_app = typer.Typer(help="Storage pools (operators).", no_args_is_help=True)

FS_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("POOL", "pool"),
    ("SIZE GiB", "size_gib"),
    ("USED", lambda f: _bytes(f.get("used_bytes"))),
    ("STATE", "state"),
    (
        "MOUNTED ON",
        lambda f: ", ".join(
            f"{a['cluster_id'] or a['instance_id']}:{a['mount_path']} ({a['state']})"
            for a in f["attachments"]
        ),
    ),
]
POOL_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("BACKEND", "backend"),
    ("NODES", lambda p: len(p["node_ids"])),
    ("REPLICA", "replica"),
    ("STATE", "state"),
    ("REASON", "reason"),
]


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fs_id(ref: str) -> str:
    if ref.startswith("fs_"):
        return ref
    for fs in STATE.client().filesystems.iter():
        if fs["name"] == ref:
            return str(fs["id"])
    return ref  # the API says it is not there


def _show(fs: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(fs)
        return
    shown = {k: v for k, v in fs.items() if k != "attachments"}
    shown["used"] = _bytes(fs.get("used_bytes"))
    print_object(shown, as_json=False)
    rows = [
        {
            "attachment": a["id"],
            "on": a["cluster_id"] or a["instance_id"],
            "path": a["mount_path"] + (" (ro)" if a["read_only"] else ""),
            "state": a["state"],
            "member": m["instance_id"],
            "mount": m["state"] + (" (simulated)" if m["simulated"] else ""),
            "reason": m["reason"] or a["reason"] or "",
        }
        for a in fs["attachments"]
        for m in (a["mounts"] or [{"instance_id": "-", "state": "-", "simulated": False,
                                  "reason": None}])
    ]  # fmt: skip
    if rows:
        print_table(
            rows,
            [
                ("ATTACHMENT", "attachment"),
                ("ON", "on"),
                ("PATH", "path"),
                ("STATE", "state"),
                ("MEMBER", "member"),
                ("MOUNT", "mount"),
                ("REASON", "reason"),
            ],
        )


def _wait(fs: dict[str, Any], wait: bool, timeout: float) -> dict[str, Any]:
    if not wait:
        return fs
    return STATE.client().filesystems.wait(fs["id"], timeout_s=timeout)


@fs_app.command("create")
@api_call
def fs_create(
    name: Annotated[str, typer.Argument(help="A name, unique in your org")],
    size_gib: Annotated[int, typer.Option("--size-gib", min=1, help="Size in GiB")],
    pool: Annotated[str, typer.Option("--pool", help="The storage pool's name or id")],
    project: Annotated[str | None, typer.Option("--project", help="A project id")] = None,
    wait: Wait = False,
    timeout: Timeout = 300.0,
    as_json: Json = False,
) -> None:
    """Create a filesystem; billed per GiB-month until deleted."""
    fs = STATE.client().filesystems.create(name, size_gib=size_gib, pool=pool, project_id=project)
    _show(_wait(fs, wait, timeout), as_json)


@fs_app.command("list")
@api_call
def fs_list(
    state: Annotated[str | None, typer.Option("--state", help="e.g. deleted")] = None,
    as_json: Json = False,
) -> None:
    """Your org's filesystems: size, bytes used, where each is mounted."""
    rows = list(STATE.client().filesystems.iter(state=state))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, FS_COLUMNS)


@fs_app.command("show")
@api_call
def fs_show(fs: FsRef, as_json: Json = False) -> None:
    """One filesystem, each attachment and each member's mount with its reason."""
    _show(STATE.client().filesystems.get(_fs_id(fs)), as_json)


@fs_app.command("resize")
@api_call
def fs_resize(
    fs: FsRef,
    size_gib: Annotated[int, typer.Option("--size-gib", min=1, help="The new size (larger)")],
    as_json: Json = False,
) -> None:
    """Grow a filesystem (it never shrinks)."""
    _show(STATE.client().filesystems.resize(_fs_id(fs), size_gib), as_json)


@fs_app.command("attach")
@api_call
def fs_attach(
    fs: FsRef,
    mount_path: Annotated[str, typer.Option("--mount-path", help="An absolute path")],
    instance: Annotated[str | None, typer.Option("--instance", help="An instance id")] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="A cluster id (every member)")
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Mount read-only")] = False,
    wait: Wait = False,
    timeout: Timeout = 300.0,
    as_json: Json = False,
) -> None:
    """Mount it on an instance or on every member of a cluster."""
    got = STATE.client().filesystems.attach(
        _fs_id(fs),
        mount_path=mount_path,
        instance_id=instance,
        cluster_id=cluster,
        read_only=read_only,
    )
    _show(_wait(got, wait, timeout), as_json)


@fs_app.command("detach")
@api_call
def fs_detach(
    fs: FsRef,
    attachment: Annotated[
        str | None,
        typer.Option("--attachment", help="Which attachment (fsa_…); default: the only one"),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 300.0,
    as_json: Json = False,
) -> None:
    """Unmount it from every member of one attachment; the data stays."""
    client = STATE.client()
    fs_id = _fs_id(fs)
    if attachment is None:
        atts = list(client.filesystems.get(fs_id)["attachments"])
        if len(atts) != 1:
            named = ", ".join(a["id"] for a in atts) or "none"
            raise typer.BadParameter(f"give --attachment: it has {len(atts)} ({named})")
        attachment = atts[0]["id"]
    got = client.filesystems.detach(fs_id, attachment)
    _show(_wait(got, wait, timeout), as_json)


@fs_app.command("delete")
@api_call
def fs_delete(fs: FsRef, as_json: Json = False) -> None:
    """Delete it and its data (refused while attached)."""
    _show(STATE.client().filesystems.delete(_fs_id(fs)), as_json)


@pools_app.command("create")
@api_call
def pools_create(
    name: Annotated[str, typer.Argument(help="The pool's name")],
    node: Annotated[
        list[str] | None, typer.Option("--node", help="A storage node id, repeatable, in order")
    ] = None,
    backend: Annotated[
        Literal["glusterfs", "local"], typer.Option("--backend", help="glusterfs or local")
    ] = "glusterfs",
    replica: Annotated[int, typer.Option("--replica", min=1, max=3, help="Copies")] = 2,
    brick_root: Annotated[
        str | None, typer.Option("--brick-root", help="Where bricks go on each node")
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 300.0,
    as_json: Json = False,
) -> None:
    """Group storage nodes into a pool; with --wait, until it is ready (or failed)."""
    client = STATE.client()
    pool = client.storage_pools.create(
        name, node_ids=list(node or []), backend=backend, replica=replica, brick_root=brick_root
    )
    if wait:
        pool = client.storage_pools.wait(pool["id"], timeout_s=timeout)
    print_object(pool, as_json=as_json)


@pools_app.command("list")
@api_call
def pools_list(as_json: Json = False) -> None:
    """The storage pools (operator): backend, replica, nodes, state."""
    rows = list(STATE.client().storage_pools.iter())
    if as_json:
        print_json(rows)
    else:
        print_table(rows, POOL_COLUMNS)


@pools_app.command("show")
@api_call
def pools_show(
    pool: Annotated[str, typer.Argument(help="Id or name")], as_json: Json = False
) -> None:
    """One storage pool: its nodes, state and reason."""
    print_object(STATE.client().storage_pools.get(pool), as_json=as_json)


@pools_app.command("delete")
@api_call
def pools_delete(
    pool: Annotated[str, typer.Argument(help="Id or name")], as_json: Json = False
) -> None:
    """Delete an empty pool."""
    print_object(STATE.client().storage_pools.delete(pool), as_json=as_json)


APPS: dict[str, typer.Typer] = {"fs": fs_app, "storage-pools": pools_app}
