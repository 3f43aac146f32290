"""GPU fragmentation of a node measured against a target workload (FGD, USENIX ATC'23).

The target workload is the distribution of pod *types* (vCPU, milli-GPU per GPU, GPU count, GPU
models allowed) that the cluster expects. For one node and one pod type ``m`` the idle GPU
milli of the node is *fragmented* when type ``m`` cannot use it:

- ``m`` needs no GPU, the node does not have ``m``'s GPU model, ``m`` does not fit (too few GPUs
  with ``gpu_milli`` free, or too little vCPU): all idle GPU milli is fragmented;
- ``m`` fits: the idle milli of the GPUs that have less than ``m``'s ``gpu_milli`` free is.

The node's fragmentation is the expectation over the target: ``sum_m freq_m * frag_m``. The FGD
policy places a pod where this expectation grows least. Memory is not part of the measure, as
in the paper.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.slices import SlicePod

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Pod type as the measure sees it: (vCPU milli, milli-GPU per GPU, GPU count, allowed models).
PodType = tuple[int, int, int, frozenset[str]]


def pod_type(pod: SlicePod) -> PodType:
    return (pod.cpu_milli, pod.gpu_milli, pod.num_gpu, pod.gpu_spec)


@dataclass(frozen=True)
class TargetWorkload:
    """Pod types and their frequencies (summing to 1), most frequent first."""

    types: tuple[PodType, ...]
    freq: FloatArray

    @property
    def cpu_milli(self) -> IntArray:
        return np.array([t[0] for t in self.types], dtype=np.int64)

    @property
    def gpu_milli(self) -> IntArray:
        return np.array([t[1] if t[2] > 0 else 0 for t in self.types], dtype=np.int64)

    @property
    def num_gpu(self) -> IntArray:
        return np.array([t[2] for t in self.types], dtype=np.int64)

    def access(self, models: Sequence[str]) -> BoolArray:
        """``[model, type]``: may pods of this type use GPUs of this model?"""
        out = np.ones((len(models), len(self.types)), dtype=np.bool_)
        for j, (_, _, _, spec) in enumerate(self.types):
            if spec:
                out[:, j] = [model in spec for model in models]
        return out


def _type_order(item: tuple[PodType, int]) -> tuple[int, int, int, int, str]:
    (cpu, milli, num, spec), count = item
    return (count, cpu, milli, num, "|".join(sorted(spec)))


def typical_pods(pods: Iterable[SlicePod], *, popularity: float = 0.95) -> TargetWorkload:
    """The most frequent pod types covering at least ``popularity`` of ``pods``, renormalised.

    Types are taken in decreasing count (ties: larger vCPU, then larger milli-GPU first), one at
    a time, until their cumulative share reaches ``popularity``; CPU-only pods count too.
    """
    if not 0 < popularity <= 1:
        raise InvalidRequest("popularity must be in (0, 1]", param="popularity")
    counts = Counter(pod_type(p) for p in pods)
    if not counts:
        raise InvalidRequest("the target workload has no pods", param="pods")
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=_type_order, reverse=True)
    chosen: list[tuple[PodType, int]] = []
    cum = 0
    for item in ranked:
        if cum >= popularity * total:
            break
        chosen.append(item)
        cum += item[1]
    freq = np.array([c for _, c in chosen], dtype=np.float64) / cum
    return TargetWorkload(types=tuple(t for t, _ in chosen), freq=freq)


class FragmentationMeter:
    """Computes node fragmentation for many node states at once against one target workload.

    ``access`` is the ``[model, type]`` matrix for the cluster's model list.
    """

    def __init__(
        self, target: TargetWorkload, models: Sequence[str], *, cpu_bound: bool = False
    ) -> None:
        self.target = target
        self.cpu_bound = cpu_bound
        self.freq = target.freq
        self.cpu = target.cpu_milli
        num = target.num_gpu
        self.num = num
        self.is_gpu = num > 0
        milli = target.gpu_milli
        self.gpu_milli = milli
        # Types share few distinct milli values: compare GPUs against each value once.
        self.levels, self.level_of = np.unique(np.where(self.is_gpu, milli, 1), return_inverse=True)
        self.access = target.access(models) & self.is_gpu[None, :]
        self.freq_sum = float(self.freq.sum())

    def measure(self, gpu_free: IntArray, cpu_free: IntArray, model_idx: IntArray) -> FloatArray:
        """Fragmentation (expected fragmented milli-GPU) of each of ``K`` node states.

        ``gpu_free`` is ``(K, GPUs)``, ``cpu_free`` and ``model_idx`` are ``(K,)``.
        """
        g = gpu_free.astype(np.float64)
        total = g.sum(axis=1)
        ge = gpu_free[:, None, :] >= self.levels[None, :, None]  # (K, L, G)
        avail = ge.sum(axis=2)[:, self.level_of]  # (K, M)
        usable = np.einsum("klg,kg->kl", ge, g)[:, self.level_of]  # idle milli on fitting GPUs
        fits = (
            (avail >= self.num[None, :])
            & (cpu_free[:, None] >= self.cpu[None, :])
            & self.access[model_idx]
        )
        if self.cpu_bound:
            # A type can use no more GPU than the vCPU left lets its pods take.
            pods_by_cpu = cpu_free[:, None] // np.maximum(self.cpu[None, :], 1)
            cap = pods_by_cpu * (self.num * self.gpu_milli)[None, :]
            usable = np.minimum(usable, cap)
        frag: FloatArray = total * self.freq_sum - (np.where(fits, usable, 0.0) @ self.freq)
        return frag


def node_fragmentation(
    target: TargetWorkload,
    models: Sequence[str],
    gpu_free: IntArray,
    cpu_free: IntArray,
    model_idx: IntArray,
) -> FloatArray:
    """One-shot form of ``FragmentationMeter.measure``."""
    return FragmentationMeter(target, models).measure(gpu_free, cpu_free, model_idx)
