"""A cluster's topology for its tenant's schedulers: the pure renderers (Slurm tree and block
``topology.conf``, Topograph's Kubernetes labels) table by table, then a 16-node cluster placed
by the real scheduler on the simulator across blocks and racks, through the API, SDK and CLI."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import compute as compute_cli
from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client
from neocloud.compute import topology_export as tx
from neocloud.compute.topology_export import Layout, Member
from neocloud.compute.worker import Worker
from neocloud.kernel.errors import InvalidRequest

from .helpers import tenant_client

LEVELS = ("region", "zone", "fabric", "block", "rack")


# ------------------------------------------------------------------------ a Slurm hostlist reader


def expand(expr: str) -> list[str]:
    """Slurm's reading of a hostlist expression (``a[01-03,7],b``), as its parser does:
    comma-separated names or ``prefix[ranges]``, each range zero-padded to its low bound."""
    names: list[str] = []
    for token in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", expr):
        m = re.fullmatch(r"(.*)\[([^\]]*)\](.*)", token)
        if m is None:
            names.append(token)
            continue
        for part in m.group(2).split(","):
            lo, _, hi = part.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                names.append(f"{m.group(1)}{n:0{len(lo)}d}{m.group(3)}")
    return names


def parse_conf(text: str) -> list[dict[str, str]]:
    """topology.conf lines as {key: value} (comments and blank lines dropped)."""
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append(dict(kv.split("=", 1) for kv in line.split()))
    return rows


def parse_labels(text: str) -> dict[str, dict[str, str]]:
    """The ``kubectl label node --overwrite HOST K=V …`` lines as {host: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line.startswith("kubectl "):
            argv = shlex.split(line)
            assert argv[:4] == ["kubectl", "label", "node", "--overwrite"], line
            assert argv[4] not in out, f"{argv[4]} labelled twice"
            out[argv[4]] = dict(kv.split("=", 1) for kv in argv[5:])
    return out


# ------------------------------------------------------------------------------- pure: tables


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["n1"], "n1"),
        (["gpu-001", "gpu-002", "gpu-003", "gpu-004"], "gpu-[001-004]"),
        (["gpu-004", "gpu-001", "gpu-002"], "gpu-[001-002,004]"),
        (["t-9", "t-10", "t-11"], "t-9,t-[10-11]"),
        (["gpu-099", "gpu-100"], "gpu-[099-100]"),
        (["x", "a1", "a1"], "a1,x"),
        (["0", "12"], "0,12"),
        (["r1", "s1", "r2"], "r[1-2],s1"),
    ],
)
def test_hostlist(names: list[str], expected: str) -> None:
    assert tx.hostlist(names) == expected
    assert sorted(expand(expected)) == sorted(set(names))


@pytest.mark.parametrize(
    ("levels", "nvl", "expected"),
    [
        (LEVELS, False, Layout(("fabric", "block", "rack"), "block")),
        (LEVELS, True, Layout(("fabric", "block", "rack"), "rack", "rack")),
        (("site", "pod", "rack"), False, Layout(("site", "pod", "rack"), "pod")),
        (("fabric", "rack"), False, Layout(("fabric", "rack"), "fabric")),
        (("rack",), False, Layout(("rack",), "rack")),
    ],
)
def test_layout_for(levels: tuple[str, ...], nvl: bool, expected: Layout) -> None:
    assert tx.layout_for(levels, rack_scale_nvlink=nvl) == expected


@pytest.mark.parametrize(
    ("counts", "sizes"),
    [
        ([8], [8]),
        ([8, 8], [8, 16]),
        ([6, 6, 4], [4, 8, 16]),
        ([3] * 5, [3, 6, 12, 24]),
        ([1] * 70_000, [2**k for k in range(16)]),  # the plugin's ceiling: base x 2**15
    ],
)
def test_block_sizes(counts: list[int], sizes: list[int]) -> None:
    got = tx.block_sizes(counts)
    assert got == sizes
    assert all(s >= got[0] and s % got[0] == 0 for s in got)
    assert all((s // got[0]) & (s // got[0] - 1) == 0 for s in got)  # powers of two
    assert min(counts) >= got[0]  # no block smaller than the base


def _m(host: str, fabric: str, block: str, rack: str) -> Member:
    return Member(
        host, {"region": "r", "zone": "z", "fabric": fabric, "block": block, "rack": rack}
    )


SMALL = [
    _m("w-0", "f1", "b1", "b1-r1"),
    _m("w-1", "f1", "b1", "b1-r1"),
    _m("w-2", "f1", "b1", "b1-r2"),
    _m("w-3", "f1", "b2", "b2-r1"),
]
LAYOUT = tx.layout_for(LEVELS)


def test_slurm_tree_lines() -> None:
    text = tx.slurm_tree(SMALL, LAYOUT, title="w")
    assert "https://slurm.schedmd.com/topology.conf.html" in text
    body = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert body == [
        "SwitchName=b1-r1 Nodes=w-[0-1]",
        "SwitchName=b1-r2 Nodes=w-2",
        "SwitchName=b2-r1 Nodes=w-3",
        "SwitchName=b1 Switches=b1-r[1-2]",
        "SwitchName=b2 Switches=b2-r1",
        "SwitchName=f1 Switches=b[1-2]",
    ]


def test_slurm_block_lines() -> None:
    text = tx.slurm_block(SMALL, LAYOUT, title="w")
    body = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert body == ["BlockName=b1 Nodes=w-[0-2]", "BlockName=b2 Nodes=w-3", "BlockSizes=1,2"]


def test_blocks_of_one_parent_are_neighbours() -> None:
    # b1 and b3 sit in fabric f1, b2 in f0: f0's block first, then f1's two side by side.
    members = [
        _m("a", "f1", "b1", "b1-r1"),
        _m("b", "f0", "b2", "b2-r1"),
        _m("c", "f1", "b3", "b3-r1"),
    ]
    rows = parse_conf(tx.slurm_block(members, LAYOUT, title="x"))
    assert [r.get("BlockName") for r in rows[:3]] == ["b2", "b1", "b3"]


def test_k8s_labels_lines() -> None:
    text = tx.k8s_labels(SMALL, LAYOUT, title="w")
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -e\n" in text
    assert parse_labels(text)["w-2"] == {
        tx.LEAF: "b1-r2",
        tx.SPINE: "b1",
        tx.CORE: "f1",
    }
    nvl = tx.layout_for(LEVELS, rack_scale_nvlink=True)
    assert parse_labels(tx.k8s_labels(SMALL, nvl, title="w"))["w-3"][tx.ACCELERATOR] == "b2-r1"
    two = tx.layout_for(("fabric", "rack"))
    assert parse_labels(tx.k8s_labels([Member("h", {"fabric": "f", "rack": "r"})], two, title="t"))[
        "h"
    ] == {tx.LEAF: "r", tx.SPINE: "f"}


def test_a_name_used_by_two_levels_is_qualified() -> None:
    members = [_m("h-0", "x", "x", "x-r1"), _m("h-1", "x", "x", "x-r2")]
    rows = parse_conf(tx.slurm_tree(members, LAYOUT, title="t"))
    names = [r["SwitchName"] for r in rows]
    assert names == ["x-r1", "x-r2", "block-x", "fabric-x"]
    assert rows[3]["Switches"] == "block-x"
    assert len(set(names)) == len(names)


def test_unknown_format_names_the_param() -> None:
    with pytest.raises(InvalidRequest) as info:
        tx.check_format("csv")
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        "unknown_format",
        "format",
    )
    with pytest.raises(ValueError, match="no members"):
        tx.render("slurm-tree", [], LAYOUT, title="t")


# ------------------------------------------------------------ a 16-node cluster, really placed

# 24 H100 nodes: one fabric, 4 blocks x 2 racks x 3 nodes; 16 nodes need at least 3 blocks.
FLEET_24 = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x:
    gpu_model: h100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    nvme_tib: 30
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 4
        racks_per_block: 2
        nodes_per_rack: 3
"""


@pytest.fixture
def big(admin: Client) -> tuple[Client, Client]:
    """The 24-node fleet and a tenant allowed 192 H100s: (operator, tenant)."""
    assert admin.fleet.import_spec(FLEET_24)["nodes_created"] == 24
    return admin, tenant_client(admin, "acme", quota=192)[1]


def _placed(tenant: Client, worker: Worker, name: str = "train") -> tuple[str, dict[str, dict]]:  # type: ignore[type-arg]
    """Create a 16-node cluster, let the scheduler place it: (id, {hostname: topology path})."""
    c = tenant.clusters.create("H100", 16, name=name)
    worker.run_once()
    c = tenant.clusters.get(c["id"])
    assert c["state"] == "running", c
    paths = {}
    for n in c["nodes"]:
        inst = tenant.instances.get(n["instance_id"])
        paths[inst["name"]] = n["topology_path"]
    assert sorted(paths, key=tx.natural_key) == [f"{name}-{i}" for i in range(16)]
    assert len({p["block"] for p in paths.values()}) >= 3  # across blocks and racks
    return c["id"], paths


def test_sixteen_nodes_in_every_format_match_the_placement(
    big: tuple[Client, Client], worker: Worker
) -> None:
    _, tenant = big
    cid, paths = _placed(tenant, worker)

    tree = parse_conf(tenant.clusters.topology(cid, "slurm-tree"))
    leaves = {r["SwitchName"]: expand(r["Nodes"]) for r in tree if "Nodes" in r}
    listed = [h for hosts in leaves.values() for h in hosts]
    assert Counter(listed) == Counter(list(paths))  # every member exactly once
    for rack, hosts in leaves.items():
        assert all(paths[h]["rack"] == rack for h in hosts)
    parents = {r["SwitchName"]: expand(r["Switches"]) for r in tree if "Switches" in r}
    for p in paths.values():  # each member's chain of switches is its path
        assert p["rack"] in parents[p["block"]]
        assert p["block"] in parents[p["fabric"]]
    assert set(parents) == {p["block"] for p in paths.values()} | {"us-east-1a-ib01"}

    block = parse_conf(tenant.clusters.topology(cid, "slurm-block"))
    blocks = {r["BlockName"]: expand(r["Nodes"]) for r in block if "BlockName" in r}
    assert Counter(h for hosts in blocks.values() for h in hosts) == Counter(list(paths))
    for name, hosts in blocks.items():
        assert all(paths[h]["block"] == name for h in hosts)
    sizes = [int(s) for s in block[-1]["BlockSizes"].split(",")]
    assert sizes[0] == min(len(h) for h in blocks.values())
    assert sizes == tx.block_sizes([len(h) for h in blocks.values()])

    labels = parse_labels(tenant.clusters.topology(cid, "k8s-labels"))
    assert labels == {
        h: {tx.LEAF: p["rack"], tx.SPINE: p["block"], tx.CORE: p["fabric"]}
        for h, p in paths.items()
    }


def test_errors(big: tuple[Client, Client], worker: Worker) -> None:
    admin, tenant = big
    cid, _ = _placed(tenant, worker)
    with pytest.raises(ApiError) as info:
        tenant.clusters.topology(cid, "csv")
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        "unknown_format",
        "format",
    )

    _, other = tenant_client(admin, "other")
    with pytest.raises(ApiError) as info:
        other.clusters.topology(cid, "slurm-tree")
    assert (info.value.status, info.value.code) == (404, "cluster_not_found")
    assert "us-east-1a" not in info.value.message
    assert "SwitchName=" in admin.clusters.topology(cid)  # the operator reads every org's

    later = tenant.clusters.create("H100", 2, name="later")  # the fleet is 8 nodes short now
    with pytest.raises(ApiError) as info:
        tenant.clusters.topology(later["id"], "slurm-block")
    assert (info.value.status, info.value.code) == (409, "cluster_not_placed")
    assert info.value.details == {"state": "pending"}

    tenant.clusters.terminate(cid)
    worker.run_once()
    with pytest.raises(ApiError) as info:  # ended members hold no node
        tenant.clusters.topology(cid, "slurm-tree")
    assert info.value.code == "cluster_not_placed"


def test_the_route_answers_text_plain(big: tuple[Client, Client], worker: Worker) -> None:
    _, tenant = big
    cid, _ = _placed(tenant, worker)
    http = tenant._http  # type: ignore[attr-defined]  # carries the key
    for fmt in tx.FORMATS:
        answer = http.get(f"/api/v1/clusters/{cid}/topology", params={"format": fmt})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].split(";")[0] == "text/plain"
    default = http.get(f"/api/v1/clusters/{cid}/topology")
    assert "topology/tree" in default.text


runner = CliRunner()
cli_app = typer.Typer()
for _name, _sub in compute_cli.APPS.items():
    cli_app.add_typer(_sub, name=_name)


def test_cli_prints_and_writes(
    big: tuple[Client, Client], worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tenant = big
    cid, paths = _placed(tenant, worker)
    monkeypatch.setattr(STATE, "_client", tenant)
    monkeypatch.setattr(output.out, "width", 200)
    result = runner.invoke(cli_app, ["clusters", "topology", "train", "--format", "slurm-tree"])
    assert result.exit_code == 0, result.output
    assert result.stdout == tenant.clusters.topology(cid, "slurm-tree")
    target = tmp_path / "topology.conf"
    result = runner.invoke(
        cli_app, ["clusters", "topology", cid, "-f", "slurm-block", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "BlockSizes=" in target.read_text()
    result = runner.invoke(cli_app, ["clusters", "topology", cid, "-f", "k8s-labels"])
    assert set(parse_labels(result.stdout)) == set(paths)
    result = runner.invoke(cli_app, ["clusters", "topology", cid, "--format", "csv"])
    assert result.exit_code == 2
