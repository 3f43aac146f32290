"""Benchmark 1: the FGD paper's experiment (ATC'23) on the Alibaba GPU v2023 trace.

Runs every workload present under ``data/traces/alibaba-gpu-v2023/csv`` with every policy
and prints, per (workload, policy), our GPU allocation ratio at 130 % arrived workload as mean
± sample standard deviation over the seeds run, next to the paper's (mean ± sd over its seeds
42-51, ``fgd-expected-results``; only for the six policies the paper ran).

    .venv/bin/python bench/placement/alibaba.py --seeds 42-44 --jobs 2
    .venv/bin/python bench/placement/alibaba.py --policies fgd,default --log runs.jsonl
    .venv/bin/python bench/placement/alibaba.py --report runs.jsonl   # table from a log only

``--log`` appends one JSON line per finished run (workload, policy, seed, ratio at 130 %,
seconds), so a long grid killed half way keeps what it finished; runs go seed by seed (every
workload and policy for the first seed, then the next), so a partial grid covers every cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
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
POLICIES = [*PAPER, "first_fit", "fgd_tied", "default"]  # fgd_lookahead: --policies


def paper_at(pct: str) -> dict[tuple[str, str], list[float]]:
    """The paper's allocation ratio at ``pct`` % arrived, one value per seed."""
    path = TRACE / "fgd-expected-results" / "analysis_allo_discrete.csv"
    vals: dict[tuple[str, str], list[float]] = defaultdict(list)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            vals[(row["workload"].removeprefix("openb_pod_list_"), row["sc_policy"])].append(
                float(row[pct])
            )
    return dict(vals)


def mean_sd(values: list[float]) -> str:
    """``mean ± sd`` (sample standard deviation; 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def table(runs: list[dict[str, object]], workloads: list[str], policies: list[str]) -> list[str]:
    """Markdown rows: per workload and policy, ours (paper) at 130 % as mean ± sd."""
    paper = paper_at("130")
    at130: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for run in runs:
        at130[(str(run["workload"]), str(run["policy"]))][int(str(run["seed"]))] = float(
            str(run["ratio_130"])
        )
    lines = [f"| workload | {' | '.join(policies)} |", "|---|" + "---|" * len(policies)]
    for w in workloads:
        cells = []
        for p in policies:
            got = at130.get((w, p), {})
            ours = f"{mean_sd(list(got.values()))} (n={len(got)})" if got else "-"
            ref = paper.get((w, PAPER.get(p, "")))
            cells.append(ours + (f" ({mean_sd(ref)})" if ref else ""))
        lines.append(f"| {w} | {' | '.join(cells)} |")
    return lines


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
    ap.add_argument("--log", type=Path, default=None, help="append one JSON line per run here")
    ap.add_argument("--report", type=Path, nargs="*", default=None, help="print from logs only")
    opts = ap.parse_args()
    if opts.report is not None:
        runs = [json.loads(x) for f in opts.report for x in f.read_text().splitlines() if x]
        ws = sorted({str(r["workload"]) for r in runs})
        ps = list(dict.fromkeys(str(r["policy"]) for r in runs))
        print("\n".join(table(runs, ws, ps)))
        print("\nours (paper) = GPU allocation ratio % at 130 % arrived, mean ± sd over seeds")
        for p in ps:
            secs = [float(str(r["seconds"])) for r in runs if r["policy"] == p]
            print(f"{p}: {len(secs)} runs, {statistics.fmean(secs):.1f} s per run")
        return 0
    seeds = parse_seeds(opts.seeds)
    present = sorted(
        p.stem.removeprefix("openb_pod_list_") for p in (TRACE / "csv").glob("openb_pod_list_*.csv")
    )
    workloads = opts.workloads.split(",") if opts.workloads else present
    policies = opts.policies.split(",")
    missing = sorted({w for w, _ in paper_at("130")} - set(present))
    print(f"seeds: {opts.seeds} ({len(seeds)}); workloads: {len(workloads)}; jobs: {opts.jobs}")
    print(f"paper workloads absent from csv/ (not run): {', '.join(missing)}")
    tasks = [(w, p, s) for s in seeds for w in workloads for p in policies]
    runs: list[dict[str, object]] = []
    curves: dict[tuple[str, str], list[dict[int, float]]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=opts.jobs) as pool:
        for w, p, s, curve, secs in pool.map(one, tasks):
            curves[(w, p)].append(curve)
            times[p].append(secs)
            run = {"workload": w, "policy": p, "seed": s, "ratio_130": curve.get(130)}
            runs.append({**run, "seconds": round(secs, 2)})
            if opts.log:
                with opts.log.open("a") as fh:
                    fh.write(json.dumps(runs[-1]) + "\n")
    wall = time.perf_counter() - t0
    means = {k: mean_curve(v) for k, v in curves.items()}
    print()
    print("\n".join(table(runs, workloads, policies)))
    print("\nours (paper) = GPU allocation ratio % at 130 % arrived, mean ± sd over seeds")
    per_run = ", ".join(f"{p} {sum(t) / len(t):.1f} s" for p, t in times.items())
    print(f"mean seconds per run (one workload, one seed): {per_run}")
    print(f"wall: {wall:.0f} s for {len(tasks)} runs")
    fgd = means.get(("default", "fgd"), {}).get(130)
    ref = paper_at("130").get(("default", "06-FGD"))
    if fgd is not None and ref:
        ref_mean = statistics.fmean(ref)
        print(f"fgd on default {fgd:.2f} vs paper {ref_mean:.2f} (diff {fgd - ref_mean:+.2f})")
    if opts.out:
        data = {f"{w}/{p}": {str(k): v for k, v in c.items()} for (w, p), c in means.items()}
        opts.out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
