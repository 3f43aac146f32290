"""A cluster's topology for its tenant's schedulers: which placed member sits where, rendered
by ``topology_export`` (Slurm tree or block ``topology.conf``, Topograph's Kubernetes labels)."""

from __future__ import annotations

from neocloud.compute.clusters import ClusterView, get_cluster, gpus_per_node
from neocloud.compute.domain import INSTANCE_FINAL, InstanceState
from neocloud.compute.reconciler import workload_hostname
from neocloud.compute.snapshot import levels_of
from neocloud.compute.topology_export import Member, check_format, layout_for, render
from neocloud.db.engine import Database
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.kernel.auth import Principal
from neocloud.kernel.errors import Conflict


def placed_members(view: ClusterView) -> list[Member]:
    """The members that hold a node now (not ended), each with the hostname its machine takes
    and its node's topology path."""
    return [
        Member(workload_hostname(m), view.paths[m.node_id])
        for m in view.members
        if m.node_id and m.node_id in view.paths and InstanceState(m.state) not in INSTANCE_FINAL
    ]


def cluster_topology(*, db: Database, actor: Principal, cluster_id: str, fmt: str) -> str:
    """The cluster's placed members in ``fmt`` (``topology_export.FORMATS``): 400
    ``unknown_format``, 404 ``cluster_not_found`` (also for another org's cluster), 409
    ``cluster_not_placed`` while no member holds a node."""
    fmt = check_format(fmt)
    view = get_cluster(db=db, actor=actor, cluster_id=cluster_id)
    members = placed_members(view)
    if not members:
        raise Conflict(
            f"cluster {cluster_id} is {view.cluster.state}: no member holds a node, so it has "
            "no topology yet",
            code="cluster_not_placed",
            details={"state": view.cluster.state},
        )
    with db.transaction() as s:
        levels = levels_of(s)
    model = resolve_gpu_model(view.cluster.gpu_model)
    layout = layout_for(levels, rack_scale_nvlink=model.nvlink_domain > gpus_per_node(view))
    return render(fmt, members, layout, title=view.cluster.name or view.cluster.id)
