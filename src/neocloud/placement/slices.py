"""Per-node shared-GPU state: slices of a node (milli-GPU per GPU, vCPU milli, memory MiB).

A ``SliceCluster`` holds the free resources of every node as numpy arrays so that policies can
score all nodes at once:

- ``gpu_free[n, i]``: free milli-GPU (0 to 1000) of GPU ``i`` on node ``n``; GPUs a node does not
  have are 0 and never fit anything (every GPU request is > 0 milli).
- ``cpu_free[n]``: free vCPU in milli-cores; ``mem_free[n]``: free memory in MiB.
- ``version[n]``: bumped on every assign/release of node ``n``, so a policy can cache per-node
  work and recompute only the nodes that changed.

A pod asks for ``num_gpu`` GPUs of ``gpu_milli`` each: a *fractional* pod takes ``gpu_milli`` < 1000
of exactly one GPU; a *whole-GPU* pod takes ``num_gpu`` GPUs that are entirely free. ``gpu_spec``
(a set of GPU model names, empty for any) restricts the nodes it may use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from neocloud.kernel.errors import Conflict, InvalidRequest

MILLI = 1000
MAX_GPUS_PER_NODE = 8

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SliceNode:
    """One node's capacity: GPU model and count, vCPU milli-cores, memory MiB."""

    name: str
    gpu_model: str
    gpus: int
    cpu_milli: int
    memory_mib: int

    def __post_init__(self) -> None:
        if not 0 <= self.gpus <= MAX_GPUS_PER_NODE:
            raise InvalidRequest(
                f"node {self.name} has {self.gpus} GPUs; 0 to {MAX_GPUS_PER_NODE} are supported",
                param="gpus",
            )
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InvalidRequest(f"node {self.name} has negative capacity", param="cpu_milli")


@dataclass(frozen=True, slots=True)
class SlicePod:
    """What a pod asks for. ``gpu_spec`` empty means any GPU model."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int = 0
    gpu_milli: int = 0
    gpu_spec: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0 or self.num_gpu < 0:
            raise InvalidRequest(f"pod {self.name} asks for a negative amount", param="cpu_milli")
        if self.num_gpu == 0 and self.gpu_milli != 0:
            raise InvalidRequest(
                f"pod {self.name} asks for {self.gpu_milli} milli-GPU on 0 GPUs",
                param="gpu_milli",
            )
        if self.num_gpu > 0 and not 0 < self.gpu_milli <= MILLI:
            raise InvalidRequest(
                f"pod {self.name}: gpu_milli must be in 1..{MILLI}, got {self.gpu_milli}",
                param="gpu_milli",
            )
        if self.num_gpu > 1 and self.gpu_milli != MILLI:
            raise InvalidRequest(
                f"pod {self.name}: a pod with {self.num_gpu} GPUs must take whole GPUs",
                param="gpu_milli",
            )

    @property
    def is_fractional(self) -> bool:
        return self.num_gpu == 1 and self.gpu_milli < MILLI

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli


@dataclass(frozen=True, slots=True)
class SliceAssignment:
    """A pod bound to GPUs ``gpus`` (indices on node ``node``), each losing ``gpu_milli``."""

    pod: SlicePod
    node: int
    gpus: tuple[int, ...]


class SliceCluster:
    """Free resources of a set of nodes, as arrays indexed by node position."""

    def __init__(self, nodes: Sequence[SliceNode]) -> None:
        self.nodes: tuple[SliceNode, ...] = tuple(nodes)
        n = len(self.nodes)
        self.models: tuple[str, ...] = tuple(sorted({node.gpu_model for node in self.nodes}))
        model_pos = {model: i for i, model in enumerate(self.models)}
        self.model_idx: IntArray = np.array(
            [model_pos[node.gpu_model] for node in self.nodes], dtype=np.int64
        )
        self.gpu_count: IntArray = np.array([node.gpus for node in self.nodes], dtype=np.int64)
        self.cpu_cap: IntArray = np.array([node.cpu_milli for node in self.nodes], dtype=np.int64)
        self.mem_cap: IntArray = np.array([node.memory_mib for node in self.nodes], dtype=np.int64)
        slots = np.arange(MAX_GPUS_PER_NODE, dtype=np.int64)[None, :]
        self.gpu_cap: IntArray = np.where(slots < self.gpu_count[:, None], MILLI, 0).astype(
            np.int64
        )
        self.gpu_free: IntArray = self.gpu_cap.copy()
        self.cpu_free: IntArray = self.cpu_cap.copy()
        self.mem_free: IntArray = self.mem_cap.copy()
        self.version: IntArray = np.zeros(n, dtype=np.int64)
        # Order among nodes with equal scores: the lowest rank wins. The FGD paper's simulator
        # takes the lexicographically smallest node name, names prefixed by a random
        # permutation per seed; ``sim`` sets a random permutation here to do the same.
        self.rank: IntArray = np.arange(n, dtype=np.int64)
        # Pods per GPU shape on each node: column 0 fractional, column k k whole GPUs.
        self.shape_counts: IntArray = np.zeros((n, MAX_GPUS_PER_NODE + 1), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.nodes)

    @staticmethod
    def shape_of(pod: SlicePod) -> int:
        """Column of ``shape_counts`` for ``pod`` (-1 for a pod without GPU)."""
        if pod.num_gpu == 0:
            return -1
        return 0 if pod.is_fractional else pod.num_gpu

    # -- capacity figures -------------------------------------------------------------------
    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_cap.sum())

    @property
    def used_gpu_milli(self) -> int:
        return int(self.gpu_cap.sum() - self.gpu_free.sum())

    def model_access(self, pod: SlicePod) -> BoolArray:
        """Per model (``self.models`` order): may ``pod`` use it? (all when no ``gpu_spec``)."""
        if not pod.gpu_spec or pod.num_gpu == 0:
            return np.ones(len(self.models), dtype=np.bool_)
        return np.array([model in pod.gpu_spec for model in self.models], dtype=np.bool_)

    # -- fit ----------------------------------------------------------------------------------
    def feasible(self, pod: SlicePod) -> BoolArray:
        """Mask of nodes where ``pod`` fits now: CPU, memory, GPU model and GPU slices."""
        ok = (self.cpu_free >= pod.cpu_milli) & (self.mem_free >= pod.memory_mib)
        if pod.num_gpu == 0:
            return ok
        ok &= self.model_access(pod)[self.model_idx]
        fitting = (self.gpu_free >= pod.gpu_milli).sum(axis=1)
        out: BoolArray = ok & (fitting >= pod.num_gpu)
        return out

    def fits(self, pod: SlicePod, node: int) -> bool:
        return bool(self.feasible_on(pod, node))

    def feasible_on(self, pod: SlicePod, node: int) -> bool:
        if self.cpu_free[node] < pod.cpu_milli or self.mem_free[node] < pod.memory_mib:
            return False
        if pod.num_gpu == 0:
            return True
        if pod.gpu_spec and self.nodes[node].gpu_model not in pod.gpu_spec:
            return False
        return int((self.gpu_free[node] >= pod.gpu_milli).sum()) >= pod.num_gpu

    def whole_gpus(self, pod: SlicePod, node: int) -> tuple[int, ...]:
        """The lowest-indexed GPUs that can take ``pod`` on ``node`` (whole or first fit)."""
        free = np.flatnonzero(self.gpu_free[node] >= pod.gpu_milli)
        return tuple(int(i) for i in free[: pod.num_gpu])

    # -- change ---------------------------------------------------------------------------------
    def assign(self, pod: SlicePod, node: int, gpus: Iterable[int] = ()) -> SliceAssignment:
        """Bind ``pod`` to ``node`` on GPUs ``gpus``; refuses anything that would over-commit."""
        chosen = tuple(int(g) for g in gpus)
        if pod.num_gpu == 0 and chosen:
            raise InvalidRequest(f"pod {pod.name} asks for no GPU but got GPUs {chosen}")
        if len(chosen) != pod.num_gpu or len(set(chosen)) != len(chosen):
            raise InvalidRequest(
                f"pod {pod.name} needs {pod.num_gpu} distinct GPUs, got {chosen}", param="gpus"
            )
        if not self.feasible_on(pod, node):
            raise Conflict(
                f"pod {pod.name} does not fit on node {self.nodes[node].name}",
                code="no_capacity",
            )
        count = int(self.gpu_count[node])
        for g in chosen:
            if not 0 <= g < count or self.gpu_free[node, g] < pod.gpu_milli:
                raise Conflict(
                    f"GPU {g} of node {self.nodes[node].name} cannot take "
                    f"{pod.gpu_milli} milli-GPU",
                    code="no_capacity",
                )
        for g in chosen:
            self.gpu_free[node, g] -= pod.gpu_milli
        self.cpu_free[node] -= pod.cpu_milli
        self.mem_free[node] -= pod.memory_mib
        if pod.num_gpu:
            self.shape_counts[node, self.shape_of(pod)] += 1
        self.version[node] += 1
        return SliceAssignment(pod=pod, node=node, gpus=chosen)

    def release(self, assignment: SliceAssignment) -> None:
        """Give back exactly what ``assign`` took."""
        pod, node = assignment.pod, assignment.node
        for g in assignment.gpus:
            if self.gpu_free[node, g] + pod.gpu_milli > self.gpu_cap[node, g]:
                raise Conflict(f"GPU {g} of node {self.nodes[node].name} released twice")
        if self.cpu_free[node] + pod.cpu_milli > self.cpu_cap[node]:
            raise Conflict(f"node {self.nodes[node].name} released more CPU than it has")
        for g in assignment.gpus:
            self.gpu_free[node, g] += pod.gpu_milli
        self.cpu_free[node] += pod.cpu_milli
        self.mem_free[node] += pod.memory_mib
        if pod.num_gpu:
            self.shape_counts[node, self.shape_of(pod)] -= 1
        self.version[node] += 1
