"""FGD fragmentation measure (hand-computed cases) and the named slice-policy registry."""

from __future__ import annotations

import numpy as np
import pytest

from neocloud.kernel.errors import NotFound
from neocloud.placement.fragmentation import FragmentationMeter, node_fragmentation, typical_pods
from neocloud.placement.slice_policies import get_slice_policy, slice_policy_names
from neocloud.placement.slices import SliceCluster, SliceNode, SlicePod

HALF = SlicePod("h", 1000, 0, 1, 500)
WHOLE = SlicePod("w", 2000, 0, 1, 1000)


def test_typical_pods_keeps_popular_types_and_renormalises() -> None:
    pods = [HALF] * 6 + [WHOLE] * 3 + [SlicePod("c", 4000, 0)]
    target = typical_pods(pods, popularity=0.9)
    assert target.types == ((1000, 500, 1, frozenset()), (2000, 1000, 1, frozenset()))
    assert target.freq.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_fragmentation_by_hand() -> None:
    target = typical_pods([HALF, WHOLE], popularity=1.0)  # 1/2 each
    g = np.array([[1000, 300, 600, 0], [1000, 1000, 0, 0], [0, 0, 0, 0]])
    frag = node_fragmentation(target, ["X"], g, np.array([8000, 8000, 8000]), np.zeros(3, int))
    # node 0: the whole-GPU type cannot use 300 + 600, the half type cannot use 300.
    assert frag.tolist() == [600.0, 0.0, 0.0]
    # Too little vCPU for the whole-GPU type: all 1,900 idle milli are fragmented for it.
    frag = node_fragmentation(target, ["X"], g[:1], np.array([1500]), np.zeros(1, int))
    assert frag.tolist() == [(1900 + 300) / 2]


def test_cpu_types_and_wrong_models_fragment_everything() -> None:
    target = typical_pods(
        [SlicePod("c", 100, 0), SlicePod("v", 0, 0, 1, 200, frozenset({"V100"}))],
        popularity=1.0,
    )
    g = np.array([[1000, 500]])
    t4 = node_fragmentation(target, ["T4", "V100"], g, np.array([10]), np.array([0]))
    v100 = node_fragmentation(target, ["T4", "V100"], g, np.array([10]), np.array([1]))
    assert t4.tolist() == [1500.0]  # neither type can use a T4
    assert v100.tolist() == [750.0]  # the CPU type's half counts it all, the V100 type nothing


def test_every_policy_is_selectable_by_name() -> None:
    target = typical_pods([HALF, WHOLE])
    c = SliceCluster([SliceNode(f"n{i}", "A100", 4, 32_000, 64_000) for i in range(3)])
    rng = np.random.default_rng(0)
    for name in slice_policy_names():
        policy = get_slice_policy(name, target=target)
        assert policy.name == name
        node, gpus = policy.place(c, HALF, rng) or (-1, ())
        assert 0 <= node < 3
        assert len(gpus) == 1


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(NotFound) as exc:
        get_slice_policy("fastest")
    assert "unknown slice policy 'fastest'" in exc.value.message
    assert "fgd" in exc.value.message
    assert exc.value.details["known"] == slice_policy_names()


def test_fgd_needs_a_target() -> None:
    with pytest.raises(NotFound, match="needs a target workload"):
        get_slice_policy("fgd")


def test_fgd_prefers_the_gpu_that_leaves_no_fragment() -> None:
    # Node 0 has a GPU with 500 free: a half pod fills it exactly. Node 1 is idle.
    target = typical_pods([HALF, WHOLE], popularity=1.0)
    c = SliceCluster([SliceNode(f"n{i}", "A100", 2, 32_000, 64_000) for i in range(2)])
    c.assign(SlicePod("x", 0, 0, 1, 500), 0, [1])
    policy = get_slice_policy("fgd", target=target)
    assert policy.place(c, HALF, np.random.default_rng(0)) == (0, (1,))
    assert get_slice_policy("best_fit").place(c, HALF, np.random.default_rng(0)) == (0, (1,))


def test_no_feasible_node_gives_none() -> None:
    c = SliceCluster([SliceNode("n", "A100", 1, 1000, 1000)])
    for name in slice_policy_names():
        policy = get_slice_policy(name, target=typical_pods([HALF]))
        assert policy.place(c, SlicePod("big", 2000, 0, 1, 100), np.random.default_rng(0)) is None


def test_equal_scores_go_to_the_lowest_rank() -> None:
    target = typical_pods([HALF, WHOLE], popularity=1.0)
    c = SliceCluster([SliceNode(f"n{i}", "A100", 2, 32_000, 64_000) for i in range(3)])
    c.rank[:] = [2, 0, 1]
    assert get_slice_policy("fgd", target=target).place(c, WHOLE, np.random.default_rng(0)) == (
        1,
        (0,),
    )


def test_default_breaks_ties_towards_fuller_and_smaller_nodes() -> None:
    pinned = SlicePod("v", 2000, 0, 1, 1000, frozenset({"V100"}))
    c = SliceCluster(
        [SliceNode("big", "A100", 8, 64_000, 64_000), SliceNode("small", "A100", 2, 16_000, 64_000)]
    )
    c.rank[:] = [0, 1]
    rng = np.random.default_rng(0)
    constrained = typical_pods([HALF, WHOLE, pinned], popularity=1.0)
    assert get_slice_policy("fgd", target=constrained).place(c, WHOLE, rng) == (0, (0,))
    assert get_slice_policy("default", target=constrained).place(c, WHOLE, rng) == (1, (0,))
    assert get_slice_policy("fgd_tied", target=constrained).place(c, WHOLE, rng) == (1, (0,))
    # Without GPU-model constraints in the target, default breaks ties as FGD does.
    free = typical_pods([HALF, WHOLE], popularity=1.0)
    assert get_slice_policy("default", target=free).place(c, WHOLE, rng) == (0, (0,))


def test_cpu_bounded_measure_caps_usable_gpu_by_vcpu() -> None:
    target = typical_pods([SlicePod("s", 4000, 0, 1, 500)], popularity=1.0)
    meter = FragmentationMeter(target, ["X"], cpu_bound=True)
    g = np.array([[1000, 1000]])
    # vCPU for one more pod only: 500 of the 2,000 idle milli are usable.
    assert meter.measure(g, np.array([4000]), np.zeros(1, int)).tolist() == [1500.0]
    plain = FragmentationMeter(target, ["X"])
    assert plain.measure(g, np.array([4000]), np.zeros(1, int)).tolist() == [0.0]
