"""CLI for the fleet: ``neocloud fleet generate|import|summary|topology|gpu-models`` and
``neocloud nodes add|list|get|events|cordon|uncordon|drain|retire|transition|health|power|
inspect``.

Where a command takes a node id, a unique hostname works too."""

from __future__ import annotations

from datetime import date
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
from neocloud.fleet.domain import Health, NodeState

fleet_app = typer.Typer(
    help="The GPU fleet: specs, imports, summary, topology.", no_args_is_help=True
)
nodes_app = typer.Typer(help="Nodes and their lifecycle (operators).", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept in the node's events)")]
NodeRef = Annotated[str, typer.Argument(help="Node id (node_…) or unique hostname")]


def _level(name: str) -> Any:
    return typer.Option(f"--{name}", help=f"Only nodes in this {name} (its name)")


def node_id(ref: str) -> str:
    """The id of the node ``ref`` names (an id, or the hostname of exactly one node)."""
    client = STATE.client()
    return resolve(
        ref,
        prefix="node",
        candidates=lambda hostname: client.nodes.iter(hostname=hostname),
        key="hostname",
    )


NODE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("ROLE", lambda n: n.get("role", "gpu")),
    ("GPU", lambda n: f"{n['gpu_count']}x {n['gpu_model']}" if n["gpu_count"] else "-"),
    (
        "STATE",
        lambda n: (
            n["state"] + (" (cordoned)" if n.get("cordoned") and n["state"] != "cordoned" else "")
        ),
    ),
    ("HEALTH", "health"),
    ("FABRIC", lambda n: n["topology"].get("fabric")),
    ("RACK", lambda n: n["topology"].get("rack")),
]
NODE_FIELDS: list[Column] = [
    ("id", "id"),
    ("hostname", "hostname"),
    ("role", "role"),
    ("gpu model", "gpu_model"),
    ("gpus", "gpu_count"),
    ("vcpus", "vcpus"),
    ("ram GiB", "ram_gib"),
    ("NVMe GiB", "nvme_gib"),
    ("topology", "topology"),
    ("state", "state"),
    ("reason", "state_reason"),
    ("cordoned", "cordoned"),
    ("drain requested", "drain_requested_at"),
    ("health", "health"),
    ("labels", "labels"),
    ("driver", "driver"),
    ("driver config", "driver_config"),
    ("credentials", lambda n: ", ".join(n.get("credentials") or []) or None),
    ("bmc", "bmc"),
    ("capex", "capex"),
    ("in service", "in_service_at"),
    ("updated", "updated_at"),
]


# ---------------------------------------------------------------------------------------- fleet


@fleet_app.command("generate")
def fleet_generate(
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="How many GPUs")],
    model: Annotated[str, typer.Option("--model", help="GPU model (H100, H200, B200, …)")],
    regions: Annotated[
        int, typer.Option("--regions", min=1, max=8, help="Spread over this many regions")
    ] = 1,
    fabric_size: Annotated[
        int, typer.Option("--fabric-size", min=1, help="Most nodes in one fabric")
    ] = 2048,
    in_service: Annotated[str | None, typer.Option("--in-service", help="YYYY-MM-DD")] = None,
    bmc: Annotated[str | None, typer.Option("--bmc", help="BMC endpoint with {hostname}")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here, not stdout")
    ] = None,
) -> None:
    """Write a fleet spec for N GPUs of one model (import it with `fleet import`)."""
    from neocloud.fleet.generate import generate_spec
    from neocloud.fleet.spec import dump_spec
    from neocloud.kernel.errors import NeocloudError

    try:
        day = date.fromisoformat(in_service) if in_service else None
        spec = generate_spec(
            gpus=gpus,
            model=model,
            regions=regions,
            fabric_nodes=fabric_size,
            in_service=day,
            bmc=bmc,
        )
    except (NeocloudError, ValueError) as exc:
        err.print(f"[red]error[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(2) from None
    text = dump_spec(spec)
    if out_file is None:
        typer.echo(text, nl=False)
        return
    out_file.write_text(text, encoding="utf-8")
    gpus_made = sum(
        spec.templates[f.template].gpu_count * f.nodes for s in spec.sites for f in s.fabrics
    )
    err.print(f"wrote {out_file}: {spec.node_count} nodes, {gpus_made} GPUs")


@fleet_app.command("import")
@api_call
def fleet_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Fleet spec (from `fleet generate`)"
        ),
    ],
    initial_state: Annotated[
        Literal["available", "enrolled", "burn_in"],
        typer.Option("--initial-state", help="The state the new nodes start in"),
    ] = "available",
    as_json: Json = False,
) -> None:
    """Import a fleet spec: every node in one transaction, or none. A node's
    `private_key_file` is read here, relative to the file, and sent as its key (sealed by the
    server, never returned)."""
    text = inline_key_files(file)
    with spinner(f"importing {file} (one transaction)"):
        result = STATE.client().fleet.import_spec(text, initial_state=initial_state)
    if as_json:
        print_json(result)
    else:
        out.print(
            f"imported {result['nodes_created']} nodes ({result['gpus_created']} GPUs, "
            f"{result['domains_created']} new domains) as {result['initial_state']}; "
            f"import {result['id']}"
        )


def inline_key_files(file: Path) -> str:
    """The spec's text, with each ``driver_config.private_key_file`` and ``bmc_password_file``
    (templates and nodes listed one by one) replaced by the key or password it names, read
    relative to the spec file. A spec without one is sent as written."""
    import yaml

    text = file.read_text(encoding="utf-8")
    if "private_key_file" not in text and "bmc_password_file" not in text:
        return text
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the server names the line
    if not isinstance(data, dict):
        return text
    holders: list[Any] = list((data.get("templates") or {}).values())
    for site in data.get("sites") or []:
        if isinstance(site, dict):
            holders.extend(site.get("nodes") or [])
    for holder in holders:
        config = holder.get("driver_config") if isinstance(holder, dict) else None
        if isinstance(config, dict) and isinstance(config.get("private_key_file"), str):
            path = file.parent / config.pop("private_key_file")
            try:
                config["private_key"] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                err.print(f"[red]error[/red] cannot read the key file {path}: {exc}")
                raise typer.Exit(2) from None
        if isinstance(config, dict) and isinstance(config.get("bmc_password_file"), str):
            config["bmc_password"] = _first_line(file.parent / config.pop("bmc_password_file"))
    dumped: str = yaml.safe_dump(data, sort_keys=False)
    return dumped


@fleet_app.command("summary")
@api_call
def fleet_summary(
    by: Annotated[
        str | None, typer.Option("--by", help="Also group by a level (fabric, …)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Nodes and GPUs by model x state (x domain)."""
    summary = STATE.client().fleet.summary(group_by=by)
    if as_json:
        print_json(summary)
        return
    columns: list[Column] = [("GPU MODEL", "gpu_model")]
    if by:
        columns.append((by.upper(), "domain"))
    columns += [("STATE", "state"), ("NODES", "nodes"), ("GPUS", "gpus")]
    print_table(summary["data"], columns)
    out.print(f"total: {summary['total_nodes']} nodes, {summary['total_gpus']} GPUs")


@fleet_app.command("topology")
@api_call
def fleet_topology(
    level: Annotated[str | None, typer.Option("--level", help="Only this level")] = None,
    as_json: Json = False,
) -> None:
    """The fleet's levels and domains with node and GPU counts."""
    topo = STATE.client().fleet.topology(level=level)
    if as_json:
        print_json(topo)
        return
    out.print("levels: " + " > ".join([*topo["levels"], "node"]))
    print_table(
        topo["domains"],
        [
            ("LEVEL", "level"),
            ("NAME", "name"),
            ("PARENT", "parent"),
            ("NODES", "nodes"),
            ("GPUS", "gpus"),
        ],
    )


@fleet_app.command("gpu-models")
@api_call
def fleet_gpu_models(as_json: Json = False) -> None:
    """The GPU catalog."""
    models = STATE.client().fleet.gpu_models()
    if as_json:
        print_json(models)
        return
    print_table(
        models,
        [
            ("ID", "id"),
            ("MEMORY GB", "memory_gb"),
            ("TDP W", "tdp_w"),
            ("NVLINK", "nvlink_domain"),
            ("BF16 TFLOP/S", "bf16_tflops"),
            ("HBM TB/S", "hbm_tbps"),
            ("LIST PRICE/GPU-H", "list_price_per_gpu_hour"),
        ],
    )


# ---------------------------------------------------------------------------------------- nodes


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]error[/red] {what} must be key=value, not {item!r}")
            raise typer.Exit(2)
        pairs[key] = value
    return pairs


@nodes_app.command("add")
@api_call
def nodes_add(
    hostname: Annotated[str, typer.Argument(help="The server's name (a DNS name, unique)")],
    vcpus: Annotated[int, typer.Option("--vcpus", min=1, help="vCPUs it has")],
    ram_gib: Annotated[int, typer.Option("--ram-gib", min=1, help="Memory, GiB")],
    topology: Annotated[
        list[str],
        typer.Option(
            "--topology", help="level=name for every level of the fleet (region=r1), repeatable"
        ),
    ],
    address: Annotated[
        str | None, typer.Option("--address", help="IP address or DNS name (ssh driver)")
    ] = None,
    private_key_file: Annotated[
        Path | None,
        typer.Option(
            "--private-key-file",
            exists=True,
            dir_okay=False,
            readable=True,
            help="The operator's unencrypted private key (ssh driver); sent once, sealed, "
            "never shown again",
        ),
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", help="H100, H200-SXM-141GB, … (gpu nodes)")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", min=1, max=16, help="GPUs it has (gpu nodes)")
    ] = None,
    role: Annotated[
        Literal["gpu", "storage", "service"],
        typer.Option("--role", help="gpu (rented), storage or service (the platform's, no GPUs)"),
    ] = "gpu",
    nvme_gib: Annotated[int, typer.Option("--nvme-gib", min=0, help="Local NVMe, GiB")] = 0,
    driver: Annotated[
        Literal["ssh", "redfish", "sim"],
        typer.Option(
            "--driver",
            help="What runs it: ssh (a server with an OS), redfish (its BMC; with --address "
            "and --private-key-file too, reimaged between tenants)",
        ),
    ] = "ssh",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="SSH port")] = 22,
    user: Annotated[str, typer.Option("--user", help="The user the driver logs in as")] = "root",
    gpu_check: Annotated[
        Literal["nvidia-smi", "none"],
        typer.Option("--gpu-check", help="How burn-in checks the GPUs (none: skip, no GPUs)"),
    ] = "nvidia-smi",
    no_sudo: Annotated[
        bool, typer.Option("--no-sudo", help="The tenant's login user gets no sudo")
    ] = False,
    scratch_path: Annotated[
        list[str] | None,
        typer.Option("--scratch-path", help="A directory each wipe empties, repeatable"),
    ] = None,
    host_key: Annotated[
        str | None, typer.Option("--host-key", help="The server's public host key line")
    ] = None,
    reboot_command: Annotated[
        str | None, typer.Option("--reboot-command", help="How to reboot it (default: reboot)")
    ] = None,
    agent_recorded: Annotated[
        str | None,
        typer.Option(
            "--agent-recorded",
            help="The node agent replays this recorded GPU source (h100, h200, h100-ecc, "
            "h100-lost-gpu) instead of NVML, reported simulated: servers without GPUs",
        ),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v, repeatable")] = None,
    bmc_url: Annotated[
        str | None, typer.Option("--bmc-url", help="https://… of the BMC (redfish driver)")
    ] = None,
    bmc_username: Annotated[
        str | None, typer.Option("--bmc-username", help="The BMC user (redfish driver)")
    ] = None,
    bmc_password_file: Annotated[
        Path | None,
        typer.Option(
            "--bmc-password-file",
            exists=True,
            dir_okay=False,
            readable=True,
            help="A file whose first line is the BMC password (redfish driver); sent once, "
            "sealed, never shown again",
        ),
    ] = None,
    system_id: Annotated[
        str | None,
        typer.Option("--system-id", help="The Redfish system, where the BMC lists several"),
    ] = None,
    no_verify_tls: Annotated[
        bool,
        typer.Option("--no-verify-tls", help="Accept the BMC's self-signed TLS certificate"),
    ] = False,
    image_url: Annotated[
        str | None,
        typer.Option("--image-url", help="The ISO the BMC boots at provision (virtual media)"),
    ] = None,
    boot_target: Annotated[
        Literal["cd", "pxe", "hdd"] | None,
        typer.Option("--boot-target", help="What provision boots once (cd with an image)"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Register a server: it starts enrolled, and burn-in checks it (reachable, disk writable,
    GPUs visible; a redfish node powered on and its BMC's health read) before any tenant gets
    it."""
    config: dict[str, Any] | None = None
    if driver == "redfish":
        config = {
            "bmc_url": bmc_url,
            "bmc_username": bmc_username,
            "system_id": system_id,
            "image_url": image_url,
            "boot_target": boot_target,
        }
        if no_verify_tls:
            config["verify_tls"] = False
        if bmc_password_file is not None:
            config["bmc_password"] = _first_line(bmc_password_file)
        config = {k: v for k, v in config.items() if v is not None}
    # A redfish node given --address (and --private-key-file) is a redfish + ssh node: OS steps
    # over SSH, reimaged through its BMC between tenants (docs/nodes-redfish.md).
    if driver == "ssh" or (driver == "redfish" and address is not None):
        ssh: dict[str, Any] = {
            "address": address,
            "port": port,
            "user": user,
            "gpu_check": gpu_check,
            "sudo": not no_sudo,
            "scratch_paths": list(scratch_path or []),
        }
        if private_key_file is not None:
            ssh["private_key"] = private_key_file.read_text(encoding="utf-8")
        if host_key is not None:
            ssh["host_key"] = host_key
        if reboot_command is not None:
            ssh["reboot_command"] = reboot_command
        if agent_recorded is not None:
            ssh["agent_recorded"] = agent_recorded
        ssh = {k: v for k, v in ssh.items() if v is not None}
        config = ssh if config is None else {**config, **ssh}
    node = STATE.client().nodes.add(
        hostname,
        role=role,
        gpu_model=gpu_model,
        gpu_count=gpus,
        vcpus=vcpus,
        ram_gib=ram_gib,
        nvme_gib=nvme_gib,
        topology=_pairs(topology, "--topology"),
        labels=_pairs(label, "--label"),
        driver=driver,
        driver_config=config,
    )
    if as_json:
        print_json(node)
    else:
        out.print(
            f"{node['id']} ({node['hostname']}): {node['state']}, driver {node['driver']}; "
            "burn-in checks it next"
        )


def _first_line(path: Path) -> str:
    """A password file's first line, without its line ending (the password as typed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]error[/red] cannot read {path}: {type(exc).__name__}")
        raise typer.Exit(2) from None
    return text.split("\n", 1)[0].removesuffix("\r")


@nodes_app.command("list")
@api_call
def nodes_list(
    role: Annotated[
        str | None, typer.Option("--role", help="Only nodes of this role: gpu, storage, service")
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", help="H100, H200-SXM-141GB, …")
    ] = None,
    state: Annotated[
        NodeState | None, typer.Option("--state", help="Only nodes in this state")
    ] = None,
    health: Annotated[
        Health | None, typer.Option("--health", help="Only nodes of this health")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Only the node of this hostname")
    ] = None,
    region: Annotated[str | None, _level("region")] = None,
    zone: Annotated[str | None, _level("zone")] = None,
    fabric: Annotated[str | None, _level("fabric")] = None,
    block: Annotated[str | None, _level("block")] = None,
    rack: Annotated[str | None, _level("rack")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v, repeatable")] = None,
    level: Annotated[
        list[str] | None, typer.Option("--level", help="other topology level: level=name")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100000, help="At most this many rows")
    ] = 100,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Every node, page after page (no --limit)")
    ] = False,
    as_json: Json = False,
) -> None:
    """List nodes, filtered by model, state, health, labels and any topology level."""
    topology = {
        k: v
        for k, v in {
            "region": region,
            "zone": zone,
            "fabric": fabric,
            "block": block,
            "rack": rack,
        }.items()
        if v
    }
    topology.update(_pairs(level, "--level"))
    found = STATE.client().nodes.iter(
        role=role,
        gpu_model=gpu_model,
        state=state.value if state else None,
        health=health.value if health else None,
        hostname=hostname,
        labels=_pairs(label, "--label"),
        topology=topology,
    )
    rows, more = take(found, None if all_rows else limit)
    print_list(rows, NODE_COLUMNS, as_json=as_json, more=more)


@nodes_app.command("get")
@api_call
def nodes_get(node: NodeRef, as_json: Json = False) -> None:
    """A node: hardware, topology, state, health, labels, capex and dates."""
    print_object(STATE.client().nodes.get(node_id(node)), as_json=as_json, fields=NODE_FIELDS)


@nodes_app.command("events")
@api_call
def nodes_events(node: NodeRef, as_json: Json = False) -> None:
    """The node's lifecycle transitions, oldest first."""
    events = list(STATE.client().iter(f"nodes/{node_id(node)}/events"))
    if as_json:
        print_json(events)
        return
    print_table(
        events,
        [
            ("AT", "at"),
            ("FROM", "from_state"),
            ("TO", "to_state"),
            ("REASON", "reason"),
            ("ACTOR", "actor"),
        ],
    )


def _action(name: str, doc: str) -> None:
    @api_call
    def command(node_ref: NodeRef, reason: Reason = None, as_json: Json = False) -> None:
        node = getattr(STATE.client().nodes, name)(node_id(node_ref), reason=reason)
        if as_json:
            print_json(node)
        else:
            out.print(
                f"{node['id']} ({node['hostname']}): {node['state']}"
                + (" [cordoned]" if node["cordoned"] and node["state"] != "cordoned" else "")
            )

    command.__doc__ = doc
    nodes_app.command(name)(command)


_action("cordon", "No new work; a busy node drains and lands in cordoned after release.")
_action("uncordon", "Lift a cordon: back to available (or back to its work if draining).")
_action("drain", "Cordon and ask for the workload to be evicted.")
_action("retire", "Take the node out of the fleet for good (not while in use).")


@nodes_app.command("transition")
@api_call
def nodes_transition(
    node_ref: NodeRef,
    to: Annotated[NodeState, typer.Argument(help="The state to move it to")],
    reason: Reason = None,
    as_json: Json = False,
) -> None:
    """Move a node through the lifecycle table (e.g. burn_in -> available, failed -> repair)."""
    node = STATE.client().nodes.transition(node_id(node_ref), to.value, reason=reason)
    if as_json:
        print_json(node)
    else:
        out.print(f"{node['id']} ({node['hostname']}): {node['state']}")


@nodes_app.command("health")
@api_call
def nodes_health(
    node_ref: NodeRef,
    check: Annotated[list[str], typer.Option("--check", help="name=pass|warn|fail[:message]")],
    as_json: Json = False,
) -> None:
    """Report health check results (a failing check takes the node out of service)."""
    checks = []
    for name, value in _pairs(check, "--check").items():
        status, _, message = value.partition(":")
        checks.append({"name": name, "status": status, **({"message": message} if message else {})})
    node = STATE.client().nodes.report_health(node_id(node_ref), checks)
    if as_json:
        print_json(node)
    else:
        out.print(
            f"{node['id']} ({node['hostname']}): health {node['health']}, state {node['state']}"
        )


@nodes_app.command("power")
@api_call
def nodes_power(
    node_ref: NodeRef,
    action: Annotated[
        Literal["on", "off", "reset"], typer.Argument(help="on, off (hard) or reset (hard)")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Even while a tenant's workload is on the node")
    ] = False,
    as_json: Json = False,
) -> None:
    """Switch a node's power now, through its driver (a redfish node's BMC; ssh nodes cannot)."""
    result = STATE.client().nodes.power(node_id(node_ref), action, force=force)
    if as_json:
        print_json(result)
        return
    took = f"; the machine gets there in about {result['duration_s']:g} s"
    out.print(
        f"{result['node_id']} ({result['hostname']}): power {result['action']} accepted"
        + (took if result["duration_s"] else "")
        + (" [forced]" if result["forced"] else "")
        + (" [simulated]" if result["simulated"] else "")
    )
    for note in result.get("notes") or []:
        out.print(f"  {note}")


@nodes_app.command("inspect")
@api_call
def nodes_inspect(node_ref: NodeRef, as_json: Json = False) -> None:
    """A node's inventory, read now through its driver (BMC, SSH; a simulated node's declared
    facts)."""
    result = STATE.client().nodes.inspect(node_id(node_ref))
    if as_json:
        print_json(result)
        return
    source = result["source"] + (", simulated" if result["simulated"] else "")
    out.print(f"{result['node_id']} ({result['hostname']}), driver {result['driver']} ({source})")
    print_object(result["inventory"], as_json=False)
