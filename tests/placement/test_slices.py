"""Shared-GPU slices: fit, assign and release never over-commit, and release restores exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.kernel.errors import Conflict, InvalidRequest
from neocloud.placement.slices import MILLI, SliceCluster, SliceNode, SlicePod


def cluster(*gpus: int, model: str = "A100") -> SliceCluster:
    return SliceCluster([SliceNode(f"n{i}", model, g, 64_000, 256_000) for i, g in enumerate(gpus)])


def test_fractional_pod_takes_one_gpu_share() -> None:
    c = cluster(2)
    a = c.assign(SlicePod("p", 1000, 1000, 1, 300), 0, [1])
    assert c.gpu_free[0].tolist()[:2] == [1000, 700]
    assert c.cpu_free[0] == 63_000
    assert c.mem_free[0] == 255_000
    c.release(a)
    assert c.gpu_free[0].tolist()[:2] == [1000, 1000]


def test_fractional_pod_never_spans_gpus() -> None:
    c = cluster(2)
    c.assign(SlicePod("a", 0, 0, 1, 600), 0, [0])
    c.assign(SlicePod("b", 0, 0, 1, 600), 0, [1])
    big = SlicePod("c", 0, 0, 1, 500)  # 800 milli free in all, but 400 on each GPU
    assert not c.feasible(big)[0]
    with pytest.raises(Conflict):
        c.assign(big, 0, [0])


def test_multi_gpu_pod_takes_whole_free_gpus() -> None:
    c = cluster(4)
    c.assign(SlicePod("s", 0, 0, 1, 100), 0, [1])
    pod = SlicePod("w", 0, 0, 2, MILLI)
    assert c.whole_gpus(pod, 0) == (0, 2)
    c.assign(pod, 0, c.whole_gpus(pod, 0))
    assert c.gpu_free[0].tolist()[:4] == [0, 900, 0, 1000]
    with pytest.raises(Conflict):
        c.assign(SlicePod("x", 0, 0, 2, MILLI), 0, [1, 3])  # GPU 1 is shared


def test_gpu_spec_is_respected() -> None:
    c = SliceCluster([SliceNode("a", "T4", 2, 8000, 8000), SliceNode("b", "V100", 2, 8000, 8000)])
    pod = SlicePod("p", 0, 0, 1, 500, frozenset({"V100"}))
    assert c.feasible(pod).tolist() == [False, True]
    with pytest.raises(Conflict):
        c.assign(pod, 0, [0])
    cpu_only = SlicePod("q", 100, 0)
    assert c.feasible(cpu_only).tolist() == [True, True]


def test_cpu_and_memory_limit_fit() -> None:
    c = cluster(1)
    assert not c.feasible(SlicePod("p", 64_001, 0))[0]
    assert not c.feasible(SlicePod("p", 0, 256_001))[0]


@pytest.mark.parametrize(
    ("num", "milli"), [(0, 10), (2, 500), (1, 0), (1, 1001)], ids=["cpu", "2x", "0m", "big"]
)
def test_bad_pod_shapes_are_refused(num: int, milli: int) -> None:
    with pytest.raises(InvalidRequest):
        SlicePod("bad", 0, 0, num, milli)


def test_wrong_gpu_count_is_refused() -> None:
    c = cluster(2)
    with pytest.raises(InvalidRequest):
        c.assign(SlicePod("p", 0, 0, 2, MILLI), 0, [0])


pods = st.builds(
    lambda kind, milli, num, cpu: (
        SlicePod("p", cpu, 0)
        if kind == 0
        else SlicePod("p", cpu, 0, 1, milli)
        if kind == 1
        else SlicePod("p", cpu, 0, num, MILLI)
    ),
    st.integers(0, 2),
    st.integers(1, 999),
    st.sampled_from([1, 2, 4, 8]),
    st.integers(0, 8000),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=8, max_size=8),
    st.lists(st.tuples(pods, st.integers(0, 7), st.booleans()), max_size=40),
)
def test_random_sequences_never_over_commit(
    start: list[int], steps: list[tuple[SlicePod, int, bool]]
) -> None:
    c = cluster(8)
    c.gpu_free[0] = start  # any starting free milli per GPU
    initial = (c.gpu_free.copy(), c.cpu_free.copy(), c.mem_free.copy())
    done = []
    for pod, gpu, release_one in steps:
        if c.feasible(pod)[0]:
            gpus = (gpu,) if pod.is_fractional else c.whole_gpus(pod, 0)
            try:
                done.append(c.assign(pod, 0, gpus))
            except Conflict:
                assert pod.is_fractional
                assert c.gpu_free[0, gpu] < pod.gpu_milli
        assert (c.gpu_free >= 0).all()
        assert (c.gpu_free <= MILLI).all()
        assert (c.cpu_free >= 0).all()
        if release_one and done:
            c.release(done.pop(0))
    for a in reversed(done):
        c.release(a)
    assert np.array_equal(c.gpu_free, initial[0])
    assert np.array_equal(c.cpu_free, initial[1])
    assert np.array_equal(c.mem_free, initial[2])
    assert (c.shape_counts == 0).all()
