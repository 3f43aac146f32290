"""The FGD paper's procedure on a small synthetic trace, and ``neocloud sim alibaba``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neocloud.cli.sim import sim_app
from neocloud.kernel.errors import InvalidRequest
from neocloud.sim.alibaba import (
    allocation_curve,
    arrival_order,
    load_nodes,
    load_pods,
    parse_seeds,
    run_once,
    simulate,
)

NODE_HEADER = ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
POD_HEADER = [
    "name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec",
    "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time",
]  # fmt: skip


def write_trace(tmp_path: Path, nodes: int = 20, pods: int = 300) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    node_csv = tmp_path / "openb_node_list_gpu_node.csv"
    with node_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NODE_HEADER)
        for i in range(nodes):
            model, gpus = ("T4", 2) if i % 2 else ("V100M32", 8)
            w.writerow([f"openb-node-{i:04d}", 64_000, 262_144, gpus, model])
    pod_csv = tmp_path / "openb_pod_list_synthetic.csv"
    with pod_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(POD_HEADER)
        for i in range(pods):
            kind = rng.integers(4)
            num, milli = [(0, 0), (1, int(rng.integers(1, 10)) * 100), (1, 1000), (2, 1000)][kind]
            spec = "V100M32" if kind == 3 and i % 3 == 0 else ""
            cpu = int(rng.integers(1, 16)) * 1000
            w.writerow(
                [f"openb-pod-{i:04d}", cpu, 8192, num, milli, spec, "LS", "Running", 0, 9, 0]
            )
    return node_csv, pod_csv


def test_loads_the_trace_columns(tmp_path: Path) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    nodes, pods = load_nodes(node_csv), load_pods(pod_csv)
    assert len(nodes) == 20
    assert nodes[1].gpu_model == "T4"
    assert nodes[0].gpus == 8
    assert len(pods) == 300
    assert any(p.gpu_spec == frozenset({"V100M32"}) for p in pods)


def test_arrivals_reach_130_percent_of_capacity(tmp_path: Path) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    pods = load_pods(pod_csv)
    capacity = 1000 * sum(n.gpus for n in load_nodes(node_csv))
    order = arrival_order(pods, capacity, np.random.default_rng(42))
    requested = sum(p.total_gpu_milli for p in order)
    assert 1.3 * capacity - 2000 <= requested <= 1.3 * capacity + 1000
    originals = [p.name for p in order if "-tuned-" not in p.name]
    assert len(set(originals)) == len(originals)
    assert set(originals) <= {p.name for p in pods}
    tuned = [i for i, p in enumerate(order) if "-tuned-" in p.name]
    assert tuned == list(range(len(originals), len(order)))  # clones come last


@pytest.mark.parametrize("policy", ["fgd", "default", "random", "best_fit"])
def test_small_sim_is_deterministic_per_seed(tmp_path: Path, policy: str) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    nodes, pods = load_nodes(node_csv), load_pods(pod_csv)
    a = run_once(nodes, pods, policy, 42)
    b = run_once(nodes, pods, policy, 42)
    assert np.array_equal(a.allocated_milli, b.allocated_milli)
    assert (np.diff(a.allocated_milli) >= 0).all()  # pods never leave
    assert a.allocated_milli[-1] <= a.capacity_milli
    curve = allocation_curve(a)
    assert curve[0] < 2
    assert 0 < curve[130] <= 100
    assert set(curve) == set(range(131))


def test_simulate_reports_the_mean_curve(tmp_path: Path) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    result = simulate(node_csv, pod_csv, "fgd", [42, 43])
    assert result["workload"] == "synthetic"
    assert result["policy"] == "fgd"
    assert len(result["allocation_ratio"]) == 131


def test_seed_ranges() -> None:
    assert parse_seeds("42-45") == [42, 43, 44, 45]
    assert parse_seeds("42,50-51") == [42, 50, 51]
    with pytest.raises(InvalidRequest):
        parse_seeds("x")


def test_cli_prints_json_per_policy(tmp_path: Path) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    args = [
        "alibaba",
        "--nodes",
        str(node_csv),
        "--pods",
        str(pod_csv),
        "--seeds",
        "42-42",
        "--json",
    ]
    result = CliRunner().invoke(sim_app, [*args, "--policy", "fgd"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip())
    assert line["policy"] == "fgd"
    assert line["workload"] == "synthetic"
    assert set(line["allocation_ratio"]) == {str(p) for p in range(131)}
    two = CliRunner().invoke(sim_app, [*args, "--policy", "fgd,random"])
    assert [json.loads(x)["policy"] for x in two.output.strip().splitlines()] == ["fgd", "random"]


def test_cli_unknown_policy_fails_with_the_known_names(tmp_path: Path) -> None:
    node_csv, pod_csv = write_trace(tmp_path)
    args = [
        "alibaba",
        "--nodes",
        str(node_csv),
        "--pods",
        str(pod_csv),
        "--policy",
        "nope",
        "--json",
    ]
    result = CliRunner().invoke(sim_app, args)
    assert result.exit_code == 2
    assert "unknown slice policy 'nope'" in result.output
