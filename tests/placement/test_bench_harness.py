"""The placement benchmarks' cores on tiny instances: results are valid before they are timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "placement"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_placement_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_optimality_ilp_is_valid_and_bounds_the_engine() -> None:
    pytest.importorskip("highspy")
    opt = _load("optimality")
    nodes = opt.fleet(fabrics=2, blocks=2, racks=1, per_rack=4)  # 16 nodes, 8 per fabric
    fabrics = {"f0": 8, "f1": 8}
    reqs = opt.instance(3, count=16, days=1.0, sizes=(1, 2, 3, 4, 6))
    hours = {r.id: r.gpu_hours for r in reqs}
    sol = opt.solve_ilp(reqs, fabrics, time_limit=5.0)
    assert sol.optimal
    opt.check_schedule(reqs, opt.assign_nodes(reqs, sol, nodes), nodes)
    assert sol.objective == pytest.approx(sum(hours[i] for i in sol.admitted))
    # the per-node formulation (x, y, z) has the same optimum, and its schedule is valid
    node_obj, node_assign = opt.solve_node_ilp(reqs, nodes, time_limit=5.0)
    opt.check_schedule(reqs, node_assign, nodes)
    assert node_obj == pytest.approx(sol.objective)
    for policy in ("default", "first_fit"):
        for offline in (False, True):
            ids, assign = opt.run_engine(nodes, reqs, policy, offline=offline)
            opt.check_schedule(reqs, assign, nodes)
            assert sum(hours[i] for i in ids) <= sol.objective + 1e-6
    for offline in (False, True):
        packed = opt.count_admission(reqs, fabrics, offline=offline)
        assert sum(hours[i] for i in packed) <= sol.objective + 1e-6
    # a warm start from a feasible admission changes nothing in the optimum
    warm = opt.solve_ilp(reqs, fabrics, 5.0, start=opt.count_admission(reqs, fabrics))
    assert warm.objective == pytest.approx(sol.objective)


def test_gangs_fit_matches_the_trace_means() -> None:
    gangs = _load("gangs")
    mixes = gangs.load_mixes()
    assert {"Kalos", "Seren", "Earth", "Helios"} <= set(mixes)
    for m in mixes.values():
        mean = sum(p * 2**j for j, p in enumerate(m.pmf))
        assert mean == pytest.approx(m.mean_gpus, rel=1e-6)
        assert sum(m.pmf) == pytest.approx(1.0)
        assert m.pmf[0] >= 0.5  # the median job uses 1 GPU, as in every trace
        assert 0.0 < m.share_ge8() <= 1.0


def test_gangs_sim_conserves_capacity() -> None:
    gangs = _load("gangs")
    nodes = gangs.fleet(fabrics=2, blocks=2, racks=2, per_rack=2)  # 16 nodes, blocks of 4
    mix = gangs.fit(gangs.Mix("tiny", 6.0, 64, 600.0, 120.0, 7200.0, gpu_s_per_job=12_000.0))
    jobs = gangs.sample_jobs(mix, 300, 0.85, len(nodes), seed=4)
    assert max(j.nodes for j in jobs) <= 8
    for policy in ("default", "random"):
        r = gangs.simulate(nodes, jobs, policy, 0.85, check=True)  # asserts after every event
        assert r.placed == len(jobs)
        assert 0.0 < r.allocation <= 1.0
        assert all(d >= 0 for ds in r.delays.values() for d in ds)
        assert r.gangs > 0
        assert r.at_true <= r.gangs
        assert r.at_ceil <= r.at_true  # ceil(N / block) is never above the true minimum
        assert r.extra_blocks >= 0


def test_admission_bench_fcfs_is_the_engine_online_and_columns_add_up() -> None:
    adm = _load("admission")
    opt = adm.opt
    nodes = opt.fleet(fabrics=2, blocks=2, racks=1, per_rack=4)
    reqs = opt.instance(3, count=60, days=2.0, sizes=(1, 2, 3, 4, 6))
    ids, _ = opt.run_engine(nodes, reqs, "default")
    fcfs = adm.run(nodes, reqs, adm.AdmissionPolicy.fcfs, 0.0)
    assert fcfs.gpu_hours == pytest.approx(sum(r.gpu_hours for r in reqs if r.id in ids))
    assert fcfs.turned_away == len(reqs) - len(ids)
    assert fcfs.steered == 0
    for policy in adm.AdmissionPolicy:
        out = adm.run(nodes, reqs, policy, 6.0)
        assert out.revenue <= sum(adm.revenue(r) for r in reqs)
        assert 0 <= out.turned_away < len(reqs)
    assert adm.run(nodes, reqs, adm.AdmissionPolicy.fcfs, 6.0).steered > 0


def test_alibaba_table_reports_mean_and_sd_beside_the_paper() -> None:
    ali = _load("alibaba")
    assert ali.mean_sd([95.0, 96.0, 97.0]) == "96.00 ± 1.00"
    assert ali.mean_sd([95.5]) == "95.50 ± 0.00"
    runs = [
        {"workload": "default", "policy": p, "seed": s, "ratio_130": v}
        for p, s, v in [("fgd", 42, 95.4), ("fgd", 43, 95.6), ("default", 42, 95.8)]
    ]
    head, _rule, row = ali.table(runs, ["default"], ["fgd", "default"])
    assert head == "| workload | fgd | default |"
    paper = ali.mean_sd(ali.paper_at("130")[("default", "06-FGD")])
    assert row == f"| default | 95.50 ± 0.14 (n=2) ({paper}) | 95.80 ± 0.00 (n=1) |"
