"""Benchmark 1: the FGD paper's experiment (ATC'23) on the Alibaba GPU v2023 trace.

Runs every workload present under ``data/traces/alibaba-gpu-v2023/csv`` with every policy
and prints, per (workload, policy), our GPU allocation ratio at 130 % arrived workload (mean over
the seeds run) next to the paper's (mean over its seeds 42-51, ``fgd-expected-results``).

    .venv/bin/python bench/placement/alibaba.py --seeds 42-44 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from neocloud.sim.alibaba import (
    allocation_curve,
    load_nodes,
    load_pods,
    mean_curve,
    parse_seeds,
    run_once,
    typical_pods,
)

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "data" / "traces" / "alibaba-gpu-v2023"
PAPER = {  # our name -> the paper's sc_policy
    "random": "01-Random",
    "dot_prod": "02-DotProd",
    "gpu_clustering": "03-GpuClustering",
    "gpu_packing": "04-GpuPacking",
    "best_fit": "05-BestFit",
    "fgd": "06-FGD",
}
POLICIES = [*PAPER, "first_fit", "default"]


def paper_at(pct: str) -> dict[tuple[str, str], float]:
    """Mean over the paper's seeds of its allocation ratio at ``pct`` % arrived."""
    path = TRACE / "fgd-expected-results" / "analysis_allo_discrete.csv"
    vals: dict[tuple[str, str], list[float]] = defaultdict(list)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            vals[(row["workload"].removeprefix("openb_pod_list_"), row["sc_policy"])].append(
                float(row[pct])
            )
    return {k: sum(v) / len(v) for k, v in vals.items()}


def one(args: tuple[str, str, int]) -> tuple[str, str, int, dict[int, float], float]:
    workload, policy, seed = args
    nodes = load_nodes(TRACE / "csv" / "openb_node_list_gpu_node.csv")
    pods = load_pods(TRACE / "csv" / f"openb_pod_list_{workload}.csv")
    start = time.perf_counter()
    trace = run_once(nodes, pods, policy, seed, target=typical_pods(pods))
    return workload, policy, seed, allocation_curve(trace), time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="42-44", help="default 42-44; the paper used 42-51")
    ap.add_argument("--workloads", default="", help="comma list; default: every CSV present")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write all curves as JSON here")
    opts = ap.parse_args()
    seeds = parse_seeds(opts.seeds)
    present = sorted(
        p.stem.removeprefix("openb_pod_list_") for p in (TRACE / "csv").glob("openb_pod_list_*.csv")
    )
    workloads = opts.workloads.split(",") if opts.workloads else present
    policies = opts.policies.split(",")
    paper = paper_at("130")
    missing = sorted({w for w, _ in paper} - set(present))
    print(f"seeds: {opts.seeds} ({len(seeds)}); workloads: {len(workloads)}; jobs: {opts.jobs}")
    print(f"paper workloads absent from csv/ (not run): {', '.join(missing)}")
    tasks = [(w, p, s) for w in workloads for p in policies for s in seeds]
    curves: dict[tuple[str, str], list[dict[int, float]]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=opts.jobs) as pool:
        for w, p, _s, curve, secs in pool.map(one, tasks):
            curves[(w, p)].append(curve)
            times[p].append(secs)
    wall = time.perf_counter() - t0
    print(f"\n| workload | {' | '.join(policies)} |")
    print("|---|" + "---|" * len(policies))
    means = {k: mean_curve(v) for k, v in curves.items()}
    for w in workloads:
        cells = []
        for p in policies:
            ours = means[(w, p)].get(130, float("nan"))
            ref = paper.get((w, PAPER.get(p, "")))
            cells.append(f"{ours:.2f}" + (f" ({ref:.2f})" if ref is not None else ""))
        print(f"| {w} | {' | '.join(cells)} |")
    print("\nours (paper) = GPU allocation ratio % at 130 % arrived workload")
    per_run = ", ".join(f"{p} {sum(t) / len(t):.1f} s" for p, t in times.items())
    print(f"mean seconds per run (one workload, one seed): {per_run}")
    print(f"wall: {wall:.0f} s for {len(tasks)} runs")
    fgd = means.get(("default", "fgd"), {}).get(130)
    ref = paper.get(("default", "06-FGD"))
    if fgd is not None and ref is not None:
        print(f"target: fgd on default {fgd:.2f} vs paper {ref:.2f} (diff {fgd - ref:+.2f}, ±1.0)")
    if opts.out:
        data = {f"{w}/{p}": {str(k): v for k, v in c.items()} for (w, p), c in means.items()}
        opts.out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
