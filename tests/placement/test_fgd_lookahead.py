"""FGD with a one-step lookahead (``fgd_lookahead``): hand-made cases and a brute-force check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neocloud.placement.fragmentation import TargetWorkload, node_fragmentation, typical_pods
from neocloud.placement.slice_policies import Fgd, FgdLookahead, get_slice_policy
from neocloud.placement.slices import SliceCluster, SliceNode, SlicePod

RNG = np.random.default_rng(0)


def _cluster(free: list[list[int]], cpu: int = 8000) -> SliceCluster:
    c = SliceCluster([SliceNode(f"n{i}", "X", len(g), cpu, 64_000) for i, g in enumerate(free)])
    for i, gpus in enumerate(free):
        for j, left in enumerate(gpus):
            if left < 1000:
                c.assign(SlicePod(f"p{i}-{j}", 0, 0, 1, 1000 - left), i, (j,))
    return c


def test_keeps_a_hole_for_the_pod_that_fits_it() -> None:
    # Target: half 750-milli pods, half 500-milli pods. Node 0 has a GPU with 750 free.
    target = typical_pods(
        [SlicePod("a", 1000, 0, 1, 750), SlicePod("b", 1000, 0, 1, 500)], popularity=1.0
    )
    c = _cluster([[750, 1000], [1000, 1000], [1000, 1000]])
    pod = SlicePod("x", 1000, 0, 1, 500)
    # FGD: every option raises the expected fragmentation by 250 milli (score 43), so the
    # lowest rank wins: node 0, into its 750 hole (250 left, which neither type can use).
    assert Fgd(target).place(c, pod, RNG) == (0, (0,))
    # Lookahead: node 1 leaves a 500 hole the next 500 pod fills exactly (score 56), and node
    # 0's 750 hole still takes a 750 pod (score 50): expectation 53 against 43 for node 0.
    assert FgdLookahead(target).place(c, pod, RNG) == (1, (0,))


def test_a_unique_best_node_is_fgds_choice() -> None:
    target = typical_pods([SlicePod("w", 1000, 0, 1, 1000)], popularity=1.0)
    c = _cluster([[1000, 0], [1000, 1000]])
    pod = SlicePod("x", 1000, 0, 1, 1000)
    # Taking node 0's last GPU leaves nothing fragmented; node 1 would be left half used.
    assert FgdLookahead(target).place(c, pod, RNG) == Fgd(target).place(c, pod, RNG) == (0, (0,))


def test_nothing_fits() -> None:
    target = typical_pods([SlicePod("w", 1000, 0, 1, 1000)], popularity=1.0)
    c = _cluster([[500, 0]])
    assert FgdLookahead(target).place(c, SlicePod("x", 1000, 0, 1, 1000), RNG) is None


def test_registered_and_needs_a_target() -> None:
    target = typical_pods([SlicePod("w", 1000, 0, 1, 1000)], popularity=1.0)
    assert get_slice_policy("fgd_lookahead", target=target).name == "fgd_lookahead"


# -- brute force: FGD's integer score from the fragmentation measure, option by option --------


def _score(target: TargetWorkload, g: np.ndarray, cpu: int, pod: SlicePod) -> float:
    """Best integer FGD score of ``pod`` on a node with free GPUs ``g`` and ``cpu`` vCPU."""
    if cpu < pod.cpu_milli or (g >= pod.gpu_milli).sum() < pod.num_gpu:
        return -math.inf

    def frag(gpus: np.ndarray, vcpu: int) -> float:
        one = node_fragmentation(target, ["X"], gpus[None, :], np.array([vcpu]), np.zeros(1, int))
        return float(one[0])

    before = frag(g, cpu)
    options = []
    if pod.is_fractional:
        for j in np.flatnonzero(g >= pod.gpu_milli):
            after = g.copy()
            after[j] -= pod.gpu_milli
            options.append(after)
    else:
        after = g.copy()
        after[np.flatnonzero(g >= pod.gpu_milli)[: pod.num_gpu]] -= pod.gpu_milli
        options.append(after)
    return max(
        math.floor(100 / (1 + math.exp((frag(a, cpu - pod.cpu_milli) - before) / 1000)))
        for a in options
    )


def _next_value(target: TargetWorkload, free: np.ndarray, cpu: np.ndarray) -> float:
    total = 0.0
    for (c, milli, num, _), f in zip(target.types, target.freq, strict=True):
        probe = SlicePod("t", c, 0, num, milli)
        best = max(_score(target, free[n], int(cpu[n]), probe) for n in range(len(free)))
        total += f * (best if math.isfinite(best) else 0.0)
    return total


@pytest.mark.parametrize("seed", range(40))
def test_choice_maximises_the_next_pods_expected_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shares = [250, 500, 750, 1000]
    kinds = [
        SlicePod(f"t{j}", int(rng.choice([500, 2000])), 0, 1, int(rng.choice(shares)))
        for j in range(3)
    ]
    target = typical_pods(kinds, popularity=1.0)
    free = [[int(rng.choice([0, 250, 500, 1000, 1000])) for _ in range(2)] for _ in range(4)]
    c = _cluster(free, cpu=int(rng.choice([3000, 8000])))
    c.rank[:] = rng.permutation(4)
    pod = SlicePod("x", 500, 0, 1, int(rng.choice(shares)))
    got = FgdLookahead(target).place(c, pod, rng)
    fgd = [_score(target, c.gpu_free[n], int(c.cpu_free[n]), pod) for n in range(4)]
    if got is None:
        assert all(s == -math.inf for s in fgd)
        return
    node, gpus = got
    assert fgd[node] == max(fgd)  # never below FGD's best score
    values = {}
    for n in range(4):
        if fgd[n] != max(fgd):
            continue
        trial = _cluster(c.gpu_free[:, :2].tolist(), cpu=8000)
        trial.cpu_free[:] = c.cpu_free
        policy_gpus = gpus if n == node else Fgd(target).place(_only(c, n), pod, rng)[1]  # type: ignore[index]
        trial.assign(pod, n, policy_gpus)
        values[n] = _next_value(target, trial.gpu_free[:, :2], trial.cpu_free)
    best = max(values.values())
    assert values[node] == pytest.approx(best)
    # Among equal expectations, the lowest rank (as FGD).
    equal = [n for n, v in values.items() if v == pytest.approx(best)]
    assert c.rank[node] == min(c.rank[n] for n in equal)


def _only(c: SliceCluster, node: int) -> SliceCluster:
    """A copy of ``c`` where only ``node`` can take a pod (to ask FGD for its GPU there)."""
    copy = _cluster(c.gpu_free[:, :2].tolist(), cpu=8000)
    copy.cpu_free[:] = np.where(np.arange(len(c)) == node, c.cpu_free, 0)
    return copy
