"""Generate a realistic fleet spec for N GPUs of one model (``neocloud fleet generate``)."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.spec import (
    MAX_NODES_PER_FILE,
    FabricSpec,
    FleetSpec,
    NodeTemplate,
    SiteSpec,
    check_spec,
    dotted,
)
from neocloud.kernel.errors import ValidationFailed

# (vcpus, ram GiB, NVMe GiB, capex per GPU) of a typical server per model.
_SERVER: dict[str, tuple[int, int, int, str]] = {
    "A100-SXM-80GB": (256, 2048, 15360, "20000"),
    "H100-SXM-80GB": (224, 2048, 30720, "31250"),
    "H200-SXM-141GB": (224, 3072, 30720, "36000"),
    "B200-SXM-180GB": (224, 4096, 30720, "47000"),
    "GB200-NVL72": (144, 960, 15360, "60000"),
    "L40S-48GB": (128, 1024, 7680, "11000"),
}
REGION_NAMES = (
    "us-east-1",
    "eu-west-1",
    "us-west-2",
    "eu-north-1",
    "ap-northeast-1",
    "us-central-1",
    "eu-central-1",
    "ap-southeast-1",
)


def generate_spec(
    *,
    gpus: int,
    model: str,
    regions: int = 1,
    fabric_nodes: int = 2048,
    in_service: date | None = None,
    bmc: str | None = None,
) -> FleetSpec:
    """A realistic spec for ``gpus`` GPUs of ``model`` (rounded up to whole nodes).

    Nodes are split evenly over ``regions`` (one zone each), into fabrics of at most
    ``fabric_nodes`` nodes; a block is one leaf switch (32 nodes: 8 racks of 4), except for
    rack-scale NVLink systems (GB200 NVL72), whose rack is the NVLink domain (18 trays of 4).
    """
    gm = resolve_gpu_model(model, param="model")
    if not 1 <= regions <= len(REGION_NAMES):
        raise ValidationFailed(f"regions must be 1 to {len(REGION_NAMES)}", param="regions")
    if gpus < 1:
        raise ValidationFailed("gpus must be at least 1", param="gpus")
    per_node = (
        gm.max_gpus_per_node
        if gm.nvlink_domain > gm.max_gpus_per_node
        else min(8, gm.max_gpus_per_node)
    )
    total = math.ceil(gpus / per_node)
    if total > MAX_NODES_PER_FILE:
        raise ValidationFailed(
            f"{gpus} GPUs make {total} nodes; one spec holds at most {MAX_NODES_PER_FILE}",
            param="gpus",
        )
    if gm.nvlink_domain > per_node:
        nodes_per_rack, racks_per_block = gm.nvlink_domain // per_node, 8
    else:
        nodes_per_rack, racks_per_block = 4, 8
    block_nodes = nodes_per_rack * racks_per_block
    if fabric_nodes < block_nodes:
        raise ValidationFailed(
            f"a fabric needs at least one block of {block_nodes} nodes", param="fabric_nodes"
        )
    vcpus, ram, nvme, capex_per_gpu = _SERVER[gm.id]
    key = f"{gm.id.split('-')[0].lower()}-{per_node}x"
    template = NodeTemplate(
        gpu_model=gm.id,
        gpu_count=per_node,
        vcpus=vcpus,
        ram_gib=ram,
        nvme_gib=nvme,
        capex=Decimal(capex_per_gpu) * per_node,
        book_life_years=5,
        labels={"pool": "general"},
    )
    sites = []
    for r in range(regions):
        region_nodes = total // regions + (1 if r < total % regions else 0)
        if region_nodes == 0:
            continue
        region = REGION_NAMES[r]
        zone = f"{region}a"
        n_fabrics = math.ceil(region_nodes / fabric_nodes)
        fabrics = []
        for f in range(n_fabrics):
            nodes = region_nodes // n_fabrics + (1 if f < region_nodes % n_fabrics else 0)
            fabrics.append(
                FabricSpec(
                    name=f"{zone}-ib{f + 1:02d}",
                    template=key,
                    blocks=math.ceil(nodes / block_nodes),
                    racks_per_block=racks_per_block,
                    nodes_per_rack=nodes_per_rack,
                    node_count=nodes if nodes % block_nodes else None,
                    in_service=in_service,
                    bmc=bmc,
                )
            )
        sites.append(SiteSpec(region=region, zone=zone, fabrics=fabrics))
    spec = FleetSpec(templates={key: template}, sites=sites)
    problem = check_spec(spec)
    if problem is not None:
        raise ValidationFailed(problem[1], param=dotted(problem[0]))
    return spec
