"""Replay of the FGD paper's experiment (Weng et al., USENIX ATC'23) on the Alibaba GPU v2023 trace.

The procedure follows the paper's simulator (hkust-adsl/kubernetes-scheduler-simulator,
``experiments/run_scripts``: ``-tune 1.3 -tuneseed S --shuffle-pod=true``):

1. Nodes: the node CSV as given (the paper uses ``openb_node_list_gpu_node.csv``, 1,213 nodes).
2. Target workload for FGD: the pod types of the *original* pod list (CPU-only pods included)
   covering 95 % of its pods.
3. With the seed: sort the pods by name and shuffle them; then append clones of pods drawn
   uniformly from the original list until the requested GPU reaches 130 % of the cluster's GPU
   capacity (or drop random pods if it is above). Clones go after the shuffled pods. The trace's
   timestamps are not used and pods never finish.
4. Nodes get a random rank (the simulator prefixes node names with a random permutation and
   gives equal scores to the smallest name).
5. Pods arrive one at a time in that order. A pod that fits nowhere is skipped (it still counts
   as arrived). After each arrival: arrived milli-GPU (all pods so far) and allocated milli-GPU.
6. Curve: for each arrived percentage ``p`` in 0..130 (rounded half-to-even to an integer), the
   mean allocation ratio (each rounded to 0.01 %) of the records at ``p``, or at ``p ± 1`` when
   there are none. Seeds are averaged afterwards.

Simulation time does not matter here (pods never depart), so the replay keeps no clock.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.fragmentation import TargetWorkload, typical_pods
from neocloud.placement.slice_policies import get_slice_policy
from neocloud.placement.slices import MILLI, SliceCluster, SliceNode, SlicePod

TUNE_RATIO = 1.3
POPULARITY = 0.95
ARRIVED_PERCENTS = range(131)
FloatArray = npt.NDArray[np.float64]


def load_nodes(path: Path) -> list[SliceNode]:
    """Nodes from an ``openb_node_list_*.csv`` (``sn,cpu_milli,memory_mib,gpu,model``)."""
    with path.open(newline="") as fh:
        return [
            SliceNode(
                name=row["sn"],
                gpu_model=row["model"] if int(row["gpu"]) > 0 else "",
                gpus=int(row["gpu"]),
                cpu_milli=int(row["cpu_milli"]),
                memory_mib=int(row["memory_mib"]),
            )
            for row in csv.DictReader(fh)
        ]


def _gpu_milli(num_gpu: int, raw: float) -> int:
    # As the trace's own converter does: clamp to (0, 1000]; a GPU pod without a share is 0.
    if num_gpu == 0:
        return 0
    return MILLI if raw > MILLI else int(raw) if raw > 0 else 0


def load_pods(path: Path) -> list[SlicePod]:
    """Pods from an ``openb_pod_list_*.csv``; ``gpu_spec`` is ``|``-separated GPU models."""
    pods: list[SlicePod] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            num = int(row["num_gpu"])
            milli = _gpu_milli(num, float(row["gpu_milli"] or 0))
            if num and not milli:
                num = 0  # no GPU share asked: the simulator treats it as a CPU pod
            spec = frozenset(x for x in (row.get("gpu_spec") or "").split("|") if x)
            pods.append(
                SlicePod(
                    name=row["name"],
                    cpu_milli=int(row["cpu_milli"]),
                    memory_mib=int(row["memory_mib"]),
                    num_gpu=num,
                    gpu_milli=milli,
                    gpu_spec=spec if num else frozenset(),
                )
            )
    return pods


def workload_name(path: Path) -> str:
    return path.stem.removeprefix("openb_pod_list_")


def arrival_order(
    pods: Sequence[SlicePod], capacity_milli: int, rng: np.random.Generator
) -> list[SlicePod]:
    """Shuffled pods, then clones up to ``TUNE_RATIO`` of ``capacity_milli`` requested GPU."""
    by_name = sorted(pods, key=lambda p: p.name)
    order = [by_name[i] for i in rng.permutation(len(by_name))]
    target = TUNE_RATIO * capacity_milli
    requested = sum(p.total_gpu_milli for p in order)
    while requested > target and order:
        requested -= order.pop(int(rng.integers(len(order)))).total_gpu_milli
    clones = 0
    while requested < target:
        pod = by_name[int(rng.integers(len(by_name)))]
        # The reference checks the per-GPU share, then adds the whole request.
        if requested + pod.gpu_milli > target:
            break
        order.append(
            SlicePod(
                name=f"{pod.name}-tuned-{clones}",
                cpu_milli=pod.cpu_milli,
                memory_mib=pod.memory_mib,
                num_gpu=pod.num_gpu,
                gpu_milli=pod.gpu_milli,
                gpu_spec=pod.gpu_spec,
            )
        )
        requested += pod.total_gpu_milli
        clones += 1
    return order


@dataclass(frozen=True)
class RunTrace:
    """Arrived and allocated milli-GPU before the first pod and after each pod."""

    arrived_milli: npt.NDArray[np.int64]
    allocated_milli: npt.NDArray[np.int64]
    capacity_milli: int
    unscheduled: int


def run_once(
    nodes: Sequence[SliceNode],
    pods: Sequence[SlicePod],
    policy: str,
    seed: int,
    *,
    target: TargetWorkload | None = None,
) -> RunTrace:
    """One seed of the experiment with ``policy``; the target defaults to ``pods``' mix."""
    if not pods:
        raise InvalidRequest("the pod list is empty", param="pods")
    rng = np.random.default_rng(seed)
    cluster = SliceCluster(nodes)
    capacity = cluster.total_gpu_milli
    if capacity <= 0:
        raise InvalidRequest("the node list has no GPU", param="nodes")
    chosen = get_slice_policy(policy, target=target or typical_pods(pods, popularity=POPULARITY))
    order = arrival_order(pods, capacity, rng)
    # Equal scores go to the node with the smallest name, names prefixed by a random rank.
    by_name = sorted(range(len(nodes)), key=lambda i: nodes[i].name)
    cluster.rank[by_name] = rng.permutation(len(nodes))
    arrived = np.zeros(len(order) + 1, dtype=np.int64)
    allocated = np.zeros(len(order) + 1, dtype=np.int64)
    total_arrived = 0
    unscheduled = 0
    for i, pod in enumerate(order, start=1):
        total_arrived += pod.total_gpu_milli
        placement = chosen.place(cluster, pod, rng)
        if placement is None:
            unscheduled += 1
        else:
            cluster.assign(pod, placement[0], placement[1])
        arrived[i] = total_arrived
        allocated[i] = cluster.used_gpu_milli
    return RunTrace(arrived, allocated, capacity, unscheduled)


def allocation_curve(trace: RunTrace) -> dict[int, float]:
    """Allocation ratio (%) at each arrived percentage, discretised as the paper's analysis."""
    gpus = trace.capacity_milli / MILLI
    arrive = np.round(trace.arrived_milli / gpus / 10.0)
    alloc = np.round(trace.allocated_milli / gpus / 10.0, 2)
    curve: dict[int, float] = {}
    for pct in ARRIVED_PERCENTS:
        sel = alloc[arrive == pct]
        if len(sel) == 0:
            sel = alloc[(arrive >= pct - 1) & (arrive <= pct + 1)]
        if len(sel):
            curve[pct] = round(float(sel.mean()), 2)
    return curve


def mean_curve(curves: Iterable[dict[int, float]]) -> dict[int, float]:
    """Mean per percentage over seeds (percentages missing in a seed are left out of it)."""
    sums: dict[int, list[float]] = {}
    for curve in curves:
        for pct, val in curve.items():
            sums.setdefault(pct, []).append(val)
    return {pct: round(math.fsum(v) / len(v), 2) for pct, v in sorted(sums.items())}


def parse_seeds(text: str) -> list[int]:
    """``42-51`` or ``42,43,50`` (or a mix) to a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InvalidRequest(f"bad seeds {text!r}: use 42-51 or 42,43", param="seeds") from None
    if not seeds:
        raise InvalidRequest(f"no seeds in {text!r}", param="seeds")
    return seeds


def simulate(nodes_csv: Path, pods_csv: Path, policy: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The experiment over ``seeds`` for one policy, as the CLI prints it."""
    nodes = load_nodes(nodes_csv)
    pods = load_pods(pods_csv)
    target = typical_pods(pods, popularity=POPULARITY)
    curves = [allocation_curve(run_once(nodes, pods, policy, s, target=target)) for s in seeds]
    curve = mean_curve(curves)
    return {
        "policy": policy,
        "workload": workload_name(pods_csv),
        "seeds": list(seeds),
        "allocation_ratio": {str(k): v for k, v in curve.items()},
    }
