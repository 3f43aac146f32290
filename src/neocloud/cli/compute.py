"""CLI for compute: ``neocloud instance-types list``, ``neocloud instances create|list|get|
terminate|reboot|events|metrics|ssh-config``, ``neocloud clusters …`` (``hosts``: the
members in a tool's format), ``neocloud reservations …``, ``neocloud capacity``, ``neocloud ssh
INSTANCE``.

Where a command takes an instance or cluster id, a unique name works too."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from neocloud.cli.output import (
    Column,
    api_call,
    err,
    out,
    print_json,
    print_list,
    print_object,
    print_table,
    take,
)
from neocloud.cli.progress import spinner
from neocloud.cli.resolve import resolve
from neocloud.cli.state import STATE
from neocloud.cli.tenancy import ssh_key_id as resolve_ssh_key
from neocloud.client.compute import ssh_config_block
from neocloud.compute.domain import InstanceState, ReservationPolicy

types_app = typer.Typer(
    help="Instance types: GPU presets, prices, availability.", no_args_is_help=True
)
instances_app = typer.Typer(
    help="GPU instances: create, list, get, terminate.", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
WAIT_TIMEOUT_EXIT = 124  # as timeout(1): the object is printed as it is, then this code
Wait = Annotated[bool, typer.Option("--wait", help="Wait until it is running (or has ended)")]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        help=f"Seconds --wait waits at most; past it, say so and exit {WAIT_TIMEOUT_EXIT}",
    ),
]

# What a launch may ask for: reserved capacity comes through --reservation-policy, not --class.
LaunchClass = Annotated[
    Literal["on_demand", "spot"],
    typer.Option("--class", help="Capacity class: on_demand, or spot (cheaper, preemptible)"),
]
All = Annotated[bool, typer.Option("--all", help="Every row, page after page (no --limit)")]
ListLimit = Annotated[
    int, typer.Option("--limit", min=1, max=100000, help="At most this many rows")
]
InstanceRef = Annotated[str, typer.Argument(help="Instance id (inst_…) or unique name")]
ClusterRef = Annotated[str, typer.Argument(help="Cluster id (clu_…) or unique name")]
ReservationId = Annotated[str, typer.Argument(help="Reservation id (rsv_…)")]
Hours = Annotated[int, typer.Option("--hours", help="Hours to add to its end")]
GpuModelFilter = Annotated[
    str | None, typer.Option("--gpu-model", help="Only this GPU model (H100, H200, …)")
]
SshKeyLines = Annotated[
    list[str] | None, typer.Option("--ssh-key", help="An SSH public key line; repeatable")
]
SshKeyIds = Annotated[
    list[str] | None,
    typer.Option(
        "--ssh-key-id",
        help="Your org's SSH key: its id (sshkey_…) or name (see ssh-keys); repeatable",
    ),
]


def ssh_key_refs(refs: list[str] | None) -> list[str] | None:
    """The ids of the SSH keys named by ``--ssh-key-id`` (ids or names of the org's keys)."""
    return [resolve_ssh_key(r) for r in refs] if refs else refs


ImageOpt = Annotated[
    str | None, typer.Option("--image", help="OS image (see images list; default: the default)")
]
UserDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--user-data",
        help="File of user data: a #! script run once as root, or #cloud-config (- for stdin)",
    ),
]
USER_DATA_MAX = 64 * 1024


def read_user_data(path: Path | None) -> str | None:
    """The user data file's text (``-``: stdin), refused here when over 64 KiB or not UTF-8;
    the API checks what it must start with."""
    if path is None:
        return None
    try:
        if str(path) == "-":
            data = typer.get_binary_stream("stdin").read(USER_DATA_MAX + 1)
        else:
            with path.expanduser().open("rb") as handle:
                data = handle.read(USER_DATA_MAX + 1)
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        raise typer.BadParameter(message, param_hint="--user-data") from None
    if len(data) > USER_DATA_MAX:
        raise typer.BadParameter("user data is at most 64 KiB", param_hint="--user-data")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter("user data must be UTF-8 text", param_hint="--user-data") from None


TYPE_COLUMNS: list[Column] = [
    ("TYPE", "id"),
    ("GPU MODEL", "gpu_model"),
    ("GPUS", "gpus"),
    ("VCPUS", "vcpus"),
    ("RAM GiB", "ram_gib"),
    ("ON-DEMAND/H", lambda t: t["price_per_hour"]["on_demand"]),
    ("SPOT/H", lambda t: t["price_per_hour"]["spot"]),
    ("AVAILABILITY", lambda t: t["availability"]["on_demand"]),
]
INSTANCE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("TYPE", "instance_type"),
    ("CLASS", "class"),
    ("STATE", "state"),
    ("REASON", "state_reason"),
    ("NODE", "node_id"),
    ("CREATED", "created_at"),
]
ENDED = {"terminated", "failed", "preempted"}


def _show(inst: dict[str, Any], as_json: bool) -> None:
    print_object(inst, as_json=as_json)


def instance_id(ref: str) -> str:
    """The id of the instance ``ref`` names (an id, or the name of exactly one instance)."""
    client = STATE.client()
    return resolve(ref, prefix="inst", candidates=lambda name: client.instances.iter(name=name))


def cluster_id(ref: str) -> str:
    """The id of the cluster ``ref`` names (an id, or the name of exactly one cluster)."""
    client = STATE.client()
    return resolve(ref, prefix="clu", candidates=lambda _: client.iter("clusters"))


def _wait(
    inst: dict[str, Any], until: set[str], timeout_s: float, quiet: bool
) -> tuple[dict[str, Any], bool]:
    """Poll an instance until one of ``until`` (see ``wait_for``)."""
    client = STATE.client()
    return wait_for(inst, lambda: client.instances.get(inst["id"]), until, timeout_s, quiet)


def wait_for(
    obj: dict[str, Any],
    fetch: Callable[[], dict[str, Any]],
    until: set[str],
    timeout_s: float,
    quiet: bool,
) -> tuple[dict[str, Any], bool]:
    """Poll ``fetch`` until the object's state is in ``until``; return it and whether the wait
    timed out (after ``timeout_s`` seconds, saying so on stderr). Each state change is printed
    on stderr (progress for people, not for --json), with a spinner on a terminal."""
    started = time.monotonic()
    last = None
    with spinner(f"{obj['id']}: {obj['state']}") as show:
        while True:
            if obj["state"] != last:
                if not quiet:
                    err.print(f"{obj['id']}: {obj['state']}")
                show(f"{obj['id']}: {obj['state']}")
                last = obj["state"]
            if obj["state"] in until:
                return obj, False
            waited = time.monotonic() - started
            if waited >= timeout_s:
                err.print(
                    f"[red]timed out[/red] after {waited:.0f} s (--timeout {timeout_s:g}): "
                    f"{obj['id']} is still {obj['state']}",
                    highlight=False,
                    soft_wrap=True,
                )
                return obj, True
            time.sleep(min(0.5, timeout_s - waited))
            obj = fetch()


def exit_if_timed_out(timed_out: bool) -> None:
    if timed_out:
        raise typer.Exit(WAIT_TIMEOUT_EXIT)


@types_app.command("list")
@api_call
def types_list(gpu_model: GpuModelFilter = None, as_json: Json = False) -> None:
    """Presets of 1, 2, 4 and 8 GPUs, hourly prices per class and coarse availability."""
    rows = STATE.client().instance_types.list(gpu_model=gpu_model)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, TYPE_COLUMNS)


Queue = Annotated[
    bool,
    typer.Option(
        "--queue", help="If it does not fit now, wait pending for capacity (default 1 day)"
    ),
]
MaxWait = Annotated[
    int | None,
    typer.Option("--max-wait", help="Seconds a queued request waits (implies --queue)"),
]


@instances_app.command("create")
@api_call
def instances_create(
    instance_type: Annotated[str, typer.Argument(help="e.g. 8xH100, 1xL40S")],
    cls: LaunchClass = "on_demand",
    name: Annotated[
        str | None, typer.Option("--name", help="A name to find it by (instead of its id)")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project id")] = None,
    ssh_key: SshKeyLines = None,
    ssh_key_id: SshKeyIds = None,
    image: ImageOpt = None,
    user_data: UserDataOpt = None,
    reservation_policy: Annotated[
        ReservationPolicy | None,
        typer.Option(
            "--reservation-policy",
            help="auto: in a matching reservation of yours if one has room, else on-demand; "
            "strict: only in a reservation; forbid: never in one (default: auto)",
        ),
    ] = None,
    queue: Queue = False,
    max_wait: MaxWait = None,
    wait: Wait = False,
    timeout: Timeout = 600.0,
    as_json: Json = False,
) -> None:
    """Ask for an instance; with --wait, return once it runs (or ends)."""
    inst = STATE.client().instances.create(
        instance_type,
        cls=cls,
        name=name,
        project_id=project,
        ssh_keys=ssh_key,
        ssh_key_ids=ssh_key_refs(ssh_key_id),
        image=image,
        user_data=read_user_data(user_data),
        reservation_policy=reservation_policy.value if reservation_policy else None,
        queue=queue or None,
        max_wait_s=max_wait,
    )
    timed_out = False
    if wait:
        inst, timed_out = _wait(inst, {"running"} | ENDED, timeout, as_json)
    _show(inst, as_json)
    exit_if_timed_out(timed_out)
    if inst["state"] in ENDED:
        raise typer.Exit(1)


@instances_app.command("list")
@api_call
def instances_list(
    state: Annotated[
        InstanceState | None, typer.Option("--state", help="Only instances in this state")
    ] = None,
    limit: ListLimit = 100,
    all_rows: All = False,
    as_json: Json = False,
) -> None:
    """Your org's instances (operators: every org's), oldest first."""
    found = STATE.client().instances.iter(state=state.value if state else None)
    rows, more = take(found, None if all_rows else limit)
    print_list(rows, INSTANCE_COLUMNS, as_json=as_json, more=more)


@instances_app.command("get")
@api_call
def instances_get(instance: InstanceRef, as_json: Json = False) -> None:
    """An instance: type, class, state and why, node, price, times."""
    _show(STATE.client().instances.get(instance_id(instance)), as_json)


@instances_app.command("terminate")
@api_call
def instances_terminate(
    instance: InstanceRef, wait: Wait = False, timeout: Timeout = 600.0, as_json: Json = False
) -> None:
    """End an instance (reason user); with --wait, return once it has ended."""
    inst = STATE.client().instances.terminate(instance_id(instance))
    timed_out = False
    if wait:
        inst, timed_out = _wait(inst, ENDED, timeout, as_json)
    _show(inst, as_json)
    exit_if_timed_out(timed_out)


@instances_app.command("reboot")
@api_call
def instances_reboot(
    instance: InstanceRef,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until it is back up (or the reboot failed)")
    ] = False,
    timeout: Timeout = 600.0,
    as_json: Json = False,
) -> None:
    """Reboot a running instance; it stays yours and stays billed."""
    client = STATE.client()
    inst = client.instances.reboot(instance_id(instance))
    if wait:
        outcome = _wait_reboot(inst["id"], timeout, as_json)
        inst = client.instances.get(inst["id"])
        _show(inst, as_json)
        if outcome is None:
            exit_if_timed_out(True)
        elif outcome != "rebooted":
            raise typer.Exit(1)
        return
    _show(inst, as_json)


def _wait_reboot(inst_id: str, timeout_s: float, quiet: bool) -> str | None:
    """Poll the events after the latest ``reboot_requested`` until ``rebooted`` (answered),
    a failed ``reboot`` or the end of the instance (``failed``), or None after ``timeout_s``."""
    client = STATE.client()
    started = time.monotonic()
    with spinner(f"{inst_id}: rebooting"):
        while True:
            events = list(client.iter(f"instances/{inst_id}/events"))
            asked = max(
                (i for i, e in enumerate(events) if e["kind"] == "reboot_requested"), default=-1
            )
            for e in events[asked + 1 :]:
                failed = e["kind"] == "reboot" and (e["message"] or "").startswith("reboot failed")
                if e["kind"] == "rebooted" or failed or e["to_state"] in ENDED:
                    if not quiet:
                        err.print(f"{inst_id}: {e['message'] or e['kind']}", highlight=False)
                    return "rebooted" if e["kind"] == "rebooted" else "failed"
            if time.monotonic() - started >= timeout_s:
                err.print(
                    f"[red]timed out[/red] after {timeout_s:g} s: {inst_id} is not back yet",
                    highlight=False,
                )
                return None
            time.sleep(0.5)


@instances_app.command("events")
@api_call
def instances_events(instance: InstanceRef, as_json: Json = False) -> None:
    """An instance's state changes, oldest first, with reasons."""
    rows = list(STATE.client().iter(f"instances/{instance_id(instance)}/events"))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, EVENT_COLUMNS)


def _refuse(message: str) -> typer.Exit:
    err.print(f"[red]error[/red]: {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _ssh_login(inst: dict[str, Any]) -> dict[str, Any]:
    """The instance's ssh view, or a clear refusal: not running, or a simulated address."""
    ssh = inst.get("ssh")
    if inst["state"] != "running" or not ssh:
        raise _refuse(f"instance {inst['id']} is {inst['state']}: ssh works once it runs")
    if inst.get("simulated"):
        raise _refuse(
            f"this instance's address is simulated: no server answers ({ssh['host']} is from a "
            "documentation range); real nodes give real addresses"
        )
    return dict(ssh)


@instances_app.command("ssh-config")
@api_call
def instances_ssh_config(instance: InstanceRef) -> None:
    """Print an OpenSSH Host block for a running instance (append it to ~/.ssh/config)."""
    inst = STATE.client().instances.get(instance_id(instance))
    try:
        text = ssh_config_block(inst)
    except ValueError as exc:
        raise _refuse(str(exc)) from None
    sys.stdout.write(text)


ssh_app = typer.Typer(subcommand_metavar="")


@ssh_app.callback(
    invoke_without_command=True,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@api_call
def ssh(
    instance: InstanceRef,
    ssh_args: Annotated[
        list[str] | None,
        typer.Argument(help="After --: more ssh arguments (options, a remote command)"),
    ] = None,
) -> None:
    """Log in to a running instance over ssh.

    Runs ssh with the instance's login (user, host, port); after `--`, more ssh arguments:
    `neocloud ssh NAME -- -L 8888:localhost:8888`, `neocloud ssh NAME -- nvidia-smi`."""
    login = _ssh_login(STATE.client().instances.get(instance_id(instance)))
    extra = list(ssh_args or [])
    if extra[:1] == ["--"]:  # the separator reaches a group's callback as an argument
        extra = extra[1:]
    # After the destination: OpenSSH reads options there too, then the remote command.
    argv = ["ssh", "-p", str(login["port"]), f"{login['user']}@{login['host']}", *extra]
    # ssh from PATH, as the tenant would type it; its arguments a list, no shell between.
    os.execvp("ssh", argv)  # noqa: S606, S607


@instances_app.command("metrics")
@api_call
def instances_metrics(
    instance: InstanceRef,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Series from this time (RFC 3339); default an hour ago"),
    ] = None,
    as_json: Json = False,
) -> None:
    """The instance's GPUs: latest utilization, memory, temperature, power, ECC, and the
    downsampled series since --since (averages per bucket)."""
    m = STATE.client().instances.metrics(instance_id(instance), since=since)
    if as_json:
        print_json(m)
        return
    if not m["latest"]:
        err.print("no GPU telemetry yet (the node's agent has not reported)")
    print_table(m["latest"], METRIC_COLUMNS)
    if m["series"]:
        out.print(f"\nseries ({m['step_s']} s buckets since {m['since']}):")
        print_table(m["series"], SERIES_COLUMNS)


METRIC_COLUMNS: list[Column] = [
    ("GPU", "gpu_index"),
    ("UTIL %", "utilization_pct"),
    ("MEM MIB", "memory_used_mib"),
    ("TEMP C", "temperature_c"),
    ("POWER W", "power_w"),
    ("SM MHZ", "sm_clock_mhz"),
    ("ECC UNCORR", "ecc_uncorrectable"),
    ("THROTTLE", lambda r: ",".join(r["throttle"]) or "-"),
    ("AT", "at"),
]
SERIES_COLUMNS: list[Column] = [
    ("BUCKET", "bucket_at"),
    ("GPU", "gpu_index"),
    ("UTIL AVG", lambda r: f"{r['utilization_avg']:.1f}"),
    ("UTIL MAX", "utilization_max"),
    ("MEM MAX MIB", "memory_used_max_mib"),
    ("TEMP MAX", "temperature_max_c"),
    ("POWER AVG", lambda r: f"{r['power_avg_w']:.0f}"),
    ("SAMPLES", "samples"),
]


EVENT_COLUMNS: list[Column] = [
    ("AT", "at"),
    ("KIND", "kind"),
    ("FROM", "from_state"),
    ("TO", "to_state"),
    ("REASON", "reason"),
    ("MESSAGE", "message"),
]


# -------------------------------------------------------------------------------------- clusters

clusters_app = typer.Typer(
    help="Clusters: gangs of whole nodes in one fabric.", no_args_is_help=True
)
CLUSTER_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("GPU MODEL", "gpu_model"),
    ("NODES", "node_count"),
    ("CLASS", "class"),
    ("STATE", "state"),
    ("REASON", "state_reason"),
    ("CREATED", "created_at"),
]
CLUSTER_ENDED = {"terminated", "failed", "preempted"}


def _show_cluster(c: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(c)
        return
    shown = {k: v for k, v in c.items() if k not in ("nodes", "scheduler")}
    sched = c.get("scheduler")
    if sched:  # managed Slurm: its state, why, and how to log into the controller
        shown["scheduler"] = f"{sched['type']} {sched['state']}" + (
            f": {sched['reason']}" if sched.get("reason") else ""
        )
        if sched.get("login_command"):
            shown["scheduler_login"] = sched["login_command"]
    print_object(shown, as_json=False)
    levels = list((c["nodes"][0].get("topology_path") or {}).keys()) if c["nodes"] else []
    print_table(
        c["nodes"],
        [
            ("INSTANCE", "instance_id"),
            ("NODE", "node_id"),
            ("STATE", "state"),
            *[
                (lvl.upper(), (lambda n, lvl=lvl: (n.get("topology_path") or {}).get(lvl)))
                for lvl in levels
            ],
        ],
    )


def _wait_cluster(
    c: dict[str, Any], until: set[str], timeout_s: float, quiet: bool
) -> tuple[dict[str, Any], bool]:
    client = STATE.client()
    return wait_for(c, lambda: client.clusters.get(c["id"]), until, timeout_s, quiet)


@clusters_app.command("create")
@api_call
def clusters_create(
    gpu_model: Annotated[str, typer.Argument(help="H100, H200, …")],
    nodes: Annotated[int, typer.Option("--nodes", help="How many whole nodes")],
    cls: LaunchClass = "on_demand",
    required: Annotated[str, typer.Option("--required", help="Level all nodes share")] = "fabric",
    preferred: Annotated[str, typer.Option("--preferred", help="Level to use least of")] = "block",
    segment: Annotated[int | None, typer.Option("--segment", help="Nodes per block")] = None,
    fabric: Annotated[str | None, typer.Option("--fabric", help="Only in this fabric")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A name to find it by (instead of its id)")
    ] = None,
    ssh_key: SshKeyLines = None,
    ssh_key_id: SshKeyIds = None,
    image: ImageOpt = None,
    user_data: UserDataOpt = None,
    queue: Queue = False,
    max_wait: MaxWait = None,
    slurm: Annotated[
        bool,
        typer.Option(
            "--slurm",
            help="Install and manage Slurm on the nodes once they run (slurmctld on the first;"
            " its login command is in the answer's scheduler)",
        ),
    ] = False,
    wait: Wait = False,
    timeout: Timeout = 600.0,
    as_json: Json = False,
) -> None:
    """Ask for a cluster; with --wait, return once it runs (or ends)."""
    topology: dict[str, Any] = {"required": required, "preferred": preferred}
    if segment is not None:
        topology["segment"] = segment
    c = STATE.client().clusters.create(
        gpu_model,
        nodes,
        cls=cls,
        topology=topology,
        fabric=fabric,
        name=name,
        ssh_keys=ssh_key,
        ssh_key_ids=ssh_key_refs(ssh_key_id),
        image=image,
        user_data=read_user_data(user_data),
        queue=queue or None,
        max_wait_s=max_wait,
        scheduler={"type": "slurm"} if slurm else None,
    )
    timed_out = False
    if wait:
        c, timed_out = _wait_cluster(c, {"running"} | CLUSTER_ENDED, timeout, as_json)
    _show_cluster(c, as_json)
    exit_if_timed_out(timed_out)
    if c["state"] in CLUSTER_ENDED:
        raise typer.Exit(1)


@clusters_app.command("list")
@api_call
def clusters_list(as_json: Json = False) -> None:
    """Your org's clusters (operators: every org's), oldest first."""
    rows = list(STATE.client().iter("clusters"))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, CLUSTER_COLUMNS)


@clusters_app.command("get")
@api_call
def clusters_get(cluster: ClusterRef, as_json: Json = False) -> None:
    """The cluster and each node's topology path."""
    _show_cluster(STATE.client().clusters.get(cluster_id(cluster)), as_json)


@clusters_app.command("terminate")
@api_call
def clusters_terminate(
    cluster: ClusterRef, wait: Wait = False, timeout: Timeout = 600.0, as_json: Json = False
) -> None:
    """End a cluster and every instance in it; with --wait, return once it has ended."""
    c = STATE.client().clusters.terminate(cluster_id(cluster))
    timed_out = False
    if wait:
        c, timed_out = _wait_cluster(c, CLUSTER_ENDED, timeout, as_json)
    _show_cluster(c, as_json)
    exit_if_timed_out(timed_out)


@clusters_app.command("topology")
@api_call
def clusters_topology(
    cluster: ClusterRef,
    format: Annotated[
        Literal["slurm-tree", "slurm-block", "k8s-labels"],
        typer.Option(
            "--format",
            "-f",
            help="slurm-tree (topology.conf, topology/tree), slurm-block (topology.conf, "
            "topology/block), k8s-labels (kubectl label lines, NVIDIA Topograph's keys)",
        ),
    ] = "slurm-tree",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Where the cluster's members were placed, for Slurm or Kubernetes."""
    text = STATE.client().clusters.topology(cluster_id(cluster), format)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {output}", highlight=False)


@clusters_app.command("events")
@api_call
def clusters_events(cluster: ClusterRef, as_json: Json = False) -> None:
    """A cluster's state changes, oldest first, with reasons."""
    rows = list(STATE.client().iter(f"clusters/{cluster_id(cluster)}/events"))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, EVENT_COLUMNS)


@clusters_app.command("hosts")
@api_call
def clusters_hosts(
    cluster: ClusterRef,
    format: Annotated[
        Literal["ssh-config", "hostfile", "ansible", "dstack", "skypilot"],
        typer.Option(
            "--format",
            "-f",
            help="ssh-config (OpenSSH), hostfile (MPI/DeepSpeed), ansible (inventory), "
            "dstack (SSH fleet), skypilot (SSH node pool)",
        ),
    ] = "ssh-config",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """The running members of a cluster in a tool's format."""
    text = STATE.client().clusters.hosts(cluster_id(cluster), format)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {output}", highlight=False)


# ---------------------------------------------------------------------------------- reservations

reservations_app = typer.Typer(
    help="Reservations: capacity blocks bought from offerings.", no_args_is_help=True
)
OFFERING_COLUMNS: list[Column] = [
    ("OFFERING", "id"),
    ("START", "start"),
    ("END", "end"),
    ("FABRIC", "fabric"),
    ("NODES", "node_count"),
    ("PRICE", "price"),
]
RESERVATION_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("GPU MODEL", "gpu_model"),
    ("NODES", "node_count"),
    ("START", "start"),
    ("END", "end"),
    ("STATE", "state"),
    ("PRICE", "price"),
]


@reservations_app.command("offerings")
@api_call
def reservations_offerings(
    gpu_model: Annotated[str, typer.Argument(help="H100, H200, …")],
    nodes: Annotated[int, typer.Option("--nodes", help="How many whole nodes")],
    hours: Annotated[int, typer.Option("--hours", help="Duration (24 h to 12 months)")],
    start_after: Annotated[str | None, typer.Option("--start-after", help="RFC 3339")] = None,
    start_before: Annotated[str | None, typer.Option("--start-before", help="RFC 3339")] = None,
    fabric: Annotated[str | None, typer.Option("--fabric", help="Only in this fabric")] = None,
    as_json: Json = False,
) -> None:
    """Priced capacity blocks (valid 5 minutes); buy one with `reservations buy OFFERING`."""
    rows = STATE.client().reservations.offerings(
        gpu_model,
        nodes,
        hours,
        start_after=start_after,
        start_before=start_before,
        fabric=fabric,
    )
    if as_json:
        print_json(rows)
    else:
        print_table(rows, OFFERING_COLUMNS)


@reservations_app.command("buy")
@api_call
def reservations_buy(
    offering_id: Annotated[str, typer.Argument(help="Offering id (off_…) from `offerings`")],
    as_json: Json = False,
) -> None:
    """Buy an offering while its price holds: the nodes are yours for its window."""
    print_object(STATE.client().reservations.buy(offering_id), as_json=as_json)


@reservations_app.command("list")
@api_call
def reservations_list(as_json: Json = False) -> None:
    """Your org's reservations (operators: every org's), oldest first."""
    rows = list(STATE.client().iter("reservations"))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, RESERVATION_COLUMNS)


@reservations_app.command("get")
@api_call
def reservations_get(reservation_id: ReservationId, as_json: Json = False) -> None:
    """A reservation: model, nodes, window, state and price."""
    print_object(STATE.client().reservations.get(reservation_id), as_json=as_json)


@reservations_app.command("extend")
@api_call
def reservations_extend(reservation_id: ReservationId, hours: Hours, as_json: Json = False) -> None:
    """Extend a reservation's end by whole hours, if its nodes are free then."""
    print_object(STATE.client().reservations.extend(reservation_id, hours), as_json=as_json)


@reservations_app.command("cancel")
@api_call
def reservations_cancel(reservation_id: ReservationId, as_json: Json = False) -> None:
    """Cancel before the start."""
    print_object(STATE.client().reservations.cancel(reservation_id), as_json=as_json)


# -------------------------------------------------------------------------------------- capacity

capacity_app = typer.Typer(help="Capacity advice per region and GPU model.")


@capacity_app.callback(invoke_without_command=True)
@api_call
def capacity(gpu_model: GpuModelFilter = None, as_json: Json = False) -> None:
    """high | medium | low | none per region (operators: exact free and total GPUs)."""
    rows = STATE.client().capacity.get(gpu_model=gpu_model)
    if as_json:
        print_json(rows)
        return
    columns: list[Column] = [
        ("REGION", "region"),
        ("GPU MODEL", "gpu_model"),
        ("ON-DEMAND", "on_demand"),
        ("SPOT", "spot"),
    ]
    if rows and rows[0].get("free_gpus") is not None:
        columns += [
            ("FREE GPUS", "free_gpus"),
            ("TOTAL", "total_gpus"),
            ("FREE NODES", "free_nodes"),
        ]
    print_table(rows, columns)


APPS: dict[str, typer.Typer] = {
    "reservations": reservations_app,
    "capacity": capacity_app,
    "instance-types": types_app,
    "instances": instances_app,
    "clusters": clusters_app,
    "ssh": ssh_app,
}
