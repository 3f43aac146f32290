"""Benchmark 4 — Gangs and topology: trace-shaped jobs on a fabric/block/rack fleet.

The fleet: 4 fabrics x 16 blocks x 8 racks x 4 nodes = 2,048 nodes of 8 H100 (a block is 32
nodes under one leaf switch; a gang must sit in one fabric and prefers the fewest blocks).

Job sizes and run times come from the per-cluster summaries in
``data/traces/acme/cluster_summary.csv`` (Seren, Kalos) and
``data/traces/helios/helios_cluster_summary.csv`` (Venus, Earth, Saturn, Uranus, total);
only means, medians and maxima are published, so each trace gets a fitted model:

- GPUs per job G = 2^j with j = round(X), X ~ Normal(0, sigma), clipped to [0, log2 max]: the
  median is 1 GPU as in every trace, sigma is solved so that E[G] is the trace's mean GPUs per
  job, and the mass above the maximum sits at the maximum (Acme's max_gpu; Helios clusters: the
  largest power of two within the cluster, at most 2,048, the Helios maximum);
- run time T = T0 * G^beta / E[G^beta], T0 log-normal with the trace's median run time, beta
  solved so that E[G*T] / E[T] is the trace's GPU-time per job over its mean run time
  (complete + cancelled + failed GPU-seconds / GPU jobs / mean run time): larger jobs run
  longer, and that is what makes them dominate GPU-time (it does not depend on T0's spread).
  The traces' own spread (mean / median run time 10-30x, a log-normal sigma of 2.1-2.7) cannot
  reach a steady state in a few thousand arrivals: the work would sit in a handful of jobs
  running far past the simulated span. So T0's sigma is capped at 1.0 (mean / median 1.65);
  time is only a scale here. T is clipped to the trace's maximum run time (Acme) or 14 days;
- nodes per job N = ceil(G / 8): jobs of 1-8 GPUs take one whole node (a bare-metal cloud).
The check of the fit: the share of GPU-time in jobs of >= 8 GPUs against Earth's measured 87% of
running GPUs.

Simulation: Poisson arrivals at an offered load rho = lambda * E[N*T] / 2,048 nodes (on the
sampled jobs; the inter-arrival times are then stretched a little so that the measured window
itself carries rho: a handful of large long jobs otherwise move it by several points). Each job
is an on-demand open-ended gang, released when its run time is up; a FIFO queue with EASY
backfill (a later job may start now if it ends before the head's earliest start, or if it lands
outside the fabric the head waits for, or in that fabric's spare nodes); time is a plain float
handed to the engine. Statistics skip the first quarter of arrivals (warm-up); the run drains
the queue at the end. Per policy: allocation ratio (busy nodes, time-averaged between warm-up
and the last arrival), queueing delay p50/p95 per size class, the share of multi-node gangs
placed in the minimum number of blocks, both ceil(N / 32) and the true minimum given the free
nodes per block at that moment (the fewest blocks of any fabric that can hold it), and stranded
capacity: free nodes in racks / blocks / fabrics whose free count is below min(typical
request, domain size), the typical request being the GPU-time median job size in nodes.
Target: >= 95% of gangs in the minimum number of blocks at <= 80% load.

Run: ``make bench-placement-gangs`` (``--jobs``, ``--loads``, ``--mixes``, ``--policies``).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from neocloud.placement import GangRequest, NodeSnapshot, Placement, PlacementEngine
from neocloud.placement.index import IDLE

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "data" / "traces"
GPUS = 8
MODEL = "H100"
FABRIC, BLOCK, RACK = 2, 3, 4  # level indices in the node path
POLICIES = ("default", "best_fit", "first_fit", "random")
LOADS = (0.5, 0.7, 0.8, 0.9)
CLASSES = ((1, 1, "1"), (2, 8, "2-8"), (9, 64, "9-64"), (65, 1 << 30, "65+"))
TARGET_MIN_BLOCKS = 0.95
SIGMA_RUN_CAP = 1.0
EARTH_SHARE = 0.87  # of running GPUs in jobs >= 8 GPUs (Earth, May 2020; traces README)


# -- the fleet ---------------------------------------------------------------------------------


def fleet(
    fabrics: int = 4, blocks: int = 16, racks: int = 8, per_rack: int = 4
) -> list[NodeSnapshot]:
    out = []
    for f in range(fabrics):
        for b in range(blocks):
            for r in range(racks):
                for i in range(per_rack):
                    path = ("reg", "zone", f"f{f}", f"f{f}b{b}", f"f{f}b{b}r{r}")
                    out.append(NodeSnapshot(f"n-{f}-{b}-{r}-{i}", MODEL, GPUS, 128, 1024, path))
    return out


# -- the job model -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mix:
    """A trace's fitted job model (see the module docstring)."""

    name: str
    mean_gpus: float
    max_gpus: int
    mean_run: float
    median_run: float
    max_run: float
    gpu_s_per_job: float
    sigma: float = 0.0
    beta: float = 0.0
    pmf: tuple[float, ...] = ()  # P(G = 2^j)

    @property
    def sigma_trace(self) -> float:
        """The log-normal spread that gives the trace's mean and median run time."""
        return math.sqrt(2 * math.log(max(self.mean_run / self.median_run, 1.0)))

    @property
    def sigma_run(self) -> float:
        """The spread simulated: the trace's, at most ``SIGMA_RUN_CAP`` (see the docstring)."""
        return min(self.sigma_trace, SIGMA_RUN_CAP)

    def share_ge8(self) -> float:
        """Share of GPU-time in jobs of >= 8 GPUs (E[G*T ; G >= 8] / E[G*T])."""
        w = [p * 2 ** (j * (1 + self.beta)) for j, p in enumerate(self.pmf)]
        return sum(w[3:]) / sum(w)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _pmf(sigma: float, top: int) -> list[float]:
    out = []
    for j in range(top + 1):
        lo = -math.inf if j == 0 else (j - 0.5) / sigma
        hi = math.inf if j == top else (j + 0.5) / sigma
        out.append(_phi(hi) - _phi(lo))
    return out


def _bisect(f: Callable[[float], float], lo: float, hi: float, target: float) -> float:
    """x in [lo, hi] with f(x) = target, f increasing."""
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit(m: Mix) -> Mix:
    top = int(math.log2(m.max_gpus))

    def mean_g(s: float) -> float:
        return sum(p * 2.0**j for j, p in enumerate(_pmf(s, top)))

    sigma = _bisect(mean_g, 0.01, 20.0, m.mean_gpus)
    pmf = _pmf(sigma, top)

    def ratio(b: float) -> float:  # E[G^(1+b)] / E[G^b] = E[G*T] / E[T]
        num = sum(p * 2 ** (j * (1 + b)) for j, p in enumerate(pmf))
        return num / sum(p * 2 ** (j * b) for j, p in enumerate(pmf))

    beta = _bisect(ratio, -1.0, 3.0, m.gpu_s_per_job / m.mean_run)
    return replace(m, sigma=sigma, beta=beta, pmf=tuple(pmf))


def load_mixes(traces: Path = TRACES) -> dict[str, Mix]:
    """Fitted models for Acme's Seren and Kalos and Helios's clusters (and its total)."""
    out: dict[str, Mix] = {}

    def gpu_s(r: dict[str, str]) -> float:
        return sum(float(r[k]) for k in ("complete_gpu_time", "cancel_gpu_time", "fail_gpu_time"))

    with open(traces / "acme" / "cluster_summary.csv") as fh:
        for r in csv.DictReader(fh):
            if r["id"] not in ("Seren", "Kalos"):
                continue  # the other rows are other traces, compared in the Acme paper
            out[r["id"]] = Mix(
                r["id"],
                float(r["avg_gpu_num"]),
                int(float(r["max_gpu"])),
                float(r["avg_run_time_gpu"]),
                float(r["med_run_time_gpu"]),
                float(r["max_run_time_gpu"]),
                gpu_s(r) / float(r["gpu_job_num"]),
            )
    with open(traces / "helios" / "helios_cluster_summary.csv") as fh:
        for r in csv.DictReader(fh):
            name = "Helios" if r["id"] == "total" else r["id"]
            cap = min(2048, 2 ** int(math.log2(float(r["gpu_num"]))))
            out[name] = Mix(
                name,
                float(r["avg_gpu_num"]),
                cap,
                float(r["avg_run_time_gpu"]),
                float(r["med_run_time_gpu"]),
                14 * 86_400.0,
                gpu_s(r) / float(r["gpu_job_num"]),
            )
    return {k: fit(m) for k, m in out.items()}


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    nodes: int
    gpus: int
    arrival: float
    run: float


def sample_jobs(mix: Mix, count: int, load: float, total_nodes: int, seed: int) -> list[Job]:
    """``count`` jobs of ``mix`` with Poisson arrivals at offered ``load`` of the fleet."""
    rng = random.Random(seed)
    js = list(range(len(mix.pmf)))
    norm = sum(p * 2 ** (j * mix.beta) for j, p in enumerate(mix.pmf))  # E[G^beta]
    mu = math.log(mix.median_run)
    shapes = []
    for _ in range(count):
        j = rng.choices(js, weights=mix.pmf)[0]
        g = 2**j
        t0 = math.exp(rng.gauss(mu, mix.sigma_run))
        t = min(max(t0 * g**mix.beta / norm, 1.0), mix.max_run)
        shapes.append((g, t))
    work = statistics.mean(-(-g // GPUS) * t for g, t in shapes)  # E[N*T], node-seconds
    rate = load * total_nodes / work
    gaps = [rng.expovariate(rate) for _ in shapes]
    out: list[Job] = []
    for _ in range(8):  # stretch time until the measured window carries ``load`` (sampling noise)
        out, now = [], 0.0
        for i, ((g, t), gap) in enumerate(zip(shapes, gaps, strict=True)):
            now += gap
            out.append(Job(f"j{i:05d}", -(-g // GPUS), g, now, t))
        got = window_load(out, total_nodes)
        if abs(got - load) < 0.002:
            break
        gaps = [x * got / load for x in gaps]
    return out


def typical_nodes(jobs: list[Job]) -> int:
    """The GPU-time median job size in nodes (half the node-time is in jobs at least this big)."""
    by = sorted(jobs, key=lambda j: j.nodes)
    total = sum(j.nodes * j.run for j in by)
    acc = 0.0
    for j in by:
        acc += j.nodes * j.run
        if acc >= total / 2:
            return j.nodes
    return 1


def window_load(jobs: list[Job], total_nodes: int) -> float:
    """Offered load inside the measured window (from the arrival after warm-up to the last):
    the node-time there had every job started on arrival, over the window's node-time."""
    t_warm, t_last = jobs[len(jobs) // 4].arrival, jobs[-1].arrival
    work = sum(
        j.nodes * max(0.0, min(j.arrival + j.run, t_last) - max(j.arrival, t_warm)) for j in jobs
    )
    return work / (total_nodes * (t_last - t_warm))


# -- the simulation ----------------------------------------------------------------------------


@dataclass(slots=True)
class Free:
    """Free nodes per fabric, block and rack, kept beside the engine to check it."""

    fabric: dict[str, int] = field(default_factory=dict)
    block: dict[str, int] = field(default_factory=dict)
    rack: dict[str, int] = field(default_factory=dict)
    blocks_of: dict[str, list[str]] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: list[NodeSnapshot]) -> Free:
        f = cls()
        for nd in nodes:
            f.bump(nd.path, 1)
            f.blocks_of.setdefault(nd.path[FABRIC], [])
            if nd.path[BLOCK] not in f.blocks_of[nd.path[FABRIC]]:
                f.blocks_of[nd.path[FABRIC]].append(nd.path[BLOCK])
            for lvl in (FABRIC, BLOCK, RACK):
                f.size[nd.path[lvl]] = f.size.get(nd.path[lvl], 0) + 1
        return f

    def bump(self, path: tuple[str, ...], by: int) -> None:
        self.fabric[path[FABRIC]] = self.fabric.get(path[FABRIC], 0) + by
        self.block[path[BLOCK]] = self.block.get(path[BLOCK], 0) + by
        self.rack[path[RACK]] = self.rack.get(path[RACK], 0) + by

    def min_blocks(self, need: int) -> int:
        """Fewest blocks any fabric with room could hold ``need`` nodes in, right now."""
        best = 1 << 30
        for fab, blocks in self.blocks_of.items():
            if self.fabric[fab] < need:
                continue
            acc = n = 0
            for c in sorted((self.block[b] for b in blocks), reverse=True):
                acc += c
                n += 1
                if acc >= need:
                    break
            best = min(best, n)
        return best

    def stranded(self, typical: int) -> dict[str, int]:
        """Free nodes in domains whose free count is below min(typical, domain size)."""
        out = {}
        for name, level in (("rack", self.rack), ("block", self.block), ("fabric", self.fabric)):
            out[name] = sum(v for d, v in level.items() if 0 < v < min(typical, self.size[d]))
        return out


@dataclass(slots=True)
class Result:
    policy: str
    load: float
    allocation: float = 0.0
    offered: float = 0.0  # node-time in the window had every job started on arrival
    delays: dict[str, list[float]] = field(default_factory=dict)
    gangs: int = 0
    at_ceil: int = 0
    at_true: int = 0
    extra_blocks: int = 0
    stranded: dict[str, float] = field(default_factory=dict)
    free_share: float = 0.0
    placed: int = 0
    backfilled: int = 0
    undone: int = 0
    seconds: float = 0.0


def size_class(nodes: int) -> str:
    for lo, hi, name in CLASSES:
        if lo <= nodes <= hi:
            return name
    raise AssertionError(nodes)


def simulate(
    nodes: list[NodeSnapshot], jobs: list[Job], policy: str, load: float, *, check: bool = False
) -> Result:
    """FIFO + EASY backfill over the engine; ``check`` compares the free counts with the
    engine's index after every event (the tests)."""
    t_start = time.process_time()
    e = PlacementEngine(nodes, policy=policy, seed=11)
    path = {nd.id: nd.path for nd in nodes}
    free = Free.of(nodes)
    block_size = max(free.size[nd.path[BLOCK]] for nd in nodes)
    total = len(nodes)
    typical = typical_nodes(jobs)
    warm_i = len(jobs) // 4
    t_warm, t_last = jobs[warm_i].arrival, jobs[-1].arrival
    res = Result(policy, load, delays={c[2]: [] for c in CLASSES})
    strand_acc = {"rack": 0.0, "block": 0.0, "fabric": 0.0}
    free_acc = 0.0
    samples = 0
    busy_area, busy_nodes, t_prev = 0.0, 0, t_warm
    running: list[tuple[float, str, Job, tuple[str, ...]]] = []  # (end, alloc, job, nodes)
    in_use: set[str] = set()
    queue: list[Job] = []
    measured = {j.id for j in jobs[warm_i:]}
    every = max(1, (len(jobs) - warm_i) // 500)  # ~500 snapshots of stranded capacity
    seen = 0

    def account(now: float) -> None:
        nonlocal busy_area, t_prev
        lo, hi = max(t_prev, t_warm), min(now, t_last)
        if hi > lo:
            busy_area += busy_nodes * (hi - lo)
        t_prev = max(t_prev, now)

    def start(job: Job, now: float, *, head_fabric: str | None = None, spare: int = 0) -> int:
        """Place ``job``; returns nodes it took from ``head_fabric`` (-1: placed nowhere or
        undone because it would delay the head)."""
        nonlocal busy_nodes
        need_min = free.min_blocks(job.nodes)
        p = e.place(GangRequest(MODEL, job.nodes, id=job.id), now=now)
        if not isinstance(p, Placement):
            raise AssertionError(f"{job.id}: {job.nodes} nodes fit by count but not placed")
        ids = p.node_ids
        fab = path[ids[0]][FABRIC]
        if head_fabric is not None and fab == head_fabric and job.nodes > spare:
            e.release(p.allocation_id, now=now)  # it would delay the head: undo
            res.undone += 1
            return -1
        assert len(set(ids)) == job.nodes, "gang size"
        assert all(path[i][FABRIC] == fab for i in ids), "one fabric"
        assert not in_use.intersection(ids), "node booked twice"
        in_use.update(ids)
        for i in ids:
            free.bump(path[i], -1)
        busy_nodes += job.nodes
        heapq.heappush(running, (now + job.run, p.allocation_id, job, ids))
        res.placed += 1
        if job.id in measured:
            res.delays[size_class(job.nodes)].append(now - job.arrival)
            if job.nodes > 1:
                used = len({path[i][BLOCK] for i in ids})
                res.gangs += 1
                res.at_ceil += used <= -(-job.nodes // block_size)
                res.at_true += used <= need_min
                res.extra_blocks += used - need_min
        return job.nodes if fab == head_fabric else 0

    def shadow(head: Job, now: float) -> tuple[float, str, int]:
        """Earliest time a fabric has room for the head, which fabric, and its spare nodes."""
        fr = dict(free.fabric)
        for end, _, job, ids in sorted(running, key=lambda x: x[0]):
            fab = path[ids[0]][FABRIC]
            fr[fab] += job.nodes
            if fr[fab] >= head.nodes:
                return end, fab, fr[fab] - head.nodes
        raise AssertionError("the head never fits")

    def schedule(now: float) -> None:
        while queue and max(free.fabric.values()) >= queue[0].nodes:
            start(queue.pop(0), now)
        if not queue:
            return
        room = max(free.fabric.values())
        if all(j.nodes > room for j in queue[1:64]):
            return
        t_star, fab, spare = shadow(queue[0], now)
        i = 1
        while i < min(len(queue), 64):
            j = queue[i]
            room = max(free.fabric.values())
            if j.nodes <= room:
                if now + j.run <= t_star:
                    start(j, now)
                else:
                    took = start(j, now, head_fabric=fab, spare=spare)
                    if took < 0:
                        i += 1
                        continue
                    spare -= took
                queue.pop(i)
                res.backfilled += 1
                continue
            i += 1

    arrivals = iter(jobs)
    nxt: Job | None = next(arrivals)
    while nxt is not None or running:
        if running and (nxt is None or running[0][0] <= nxt.arrival):
            end, alloc, job, ids = heapq.heappop(running)
            account(end)
            e.release(alloc, now=end)
            in_use.difference_update(ids)
            for i in ids:
                free.bump(path[i], 1)
            busy_nodes -= job.nodes
            # finish every job ending at the same instant before scheduling
            if running and running[0][0] == end:
                continue
            now = end
        else:
            assert nxt is not None
            now = nxt.arrival
            account(now)
            seen += 1
            if nxt.id in measured and seen % every == 0:
                sample = free.stranded(typical)
                for k, v in sample.items():
                    strand_acc[k] += v
                free_acc += sum(free.fabric.values())
                samples += 1
            queue.append(nxt)
            nxt = next(arrivals, None)
        schedule(now)
        if check:
            mi = e.index.models[MODEL]
            for fab, n in free.fabric.items():
                assert mi.counts[FABRIC][fab][IDLE] == n, "free counts disagree with the engine"
            assert busy_nodes + sum(free.fabric.values()) == total, "capacity not conserved"
    assert not queue, "jobs left in the queue"
    assert not in_use
    assert all(free.fabric[f] == free.size[f] for f in free.fabric), "capacity not returned"
    res.allocation = busy_area / (total * (t_last - t_warm))
    res.offered = window_load(jobs, total)
    res.stranded = {k: v / max(samples, 1) for k, v in strand_acc.items()}
    res.free_share = free_acc / max(samples, 1) / total
    res.seconds = time.process_time() - t_start
    return res


# -- the report --------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def fmt_delay(s: float) -> str:
    if s != s:  # nan
        return "-"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--mixes", default="Kalos:8000,Helios:20000", help="trace[:arrivals per run],..."
    )
    ap.add_argument("--loads", default=",".join(str(x) for x in LOADS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--jobs", type=int, default=8000, help="arrivals per run if not given")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    nodes = fleet()
    mixes = load_mixes()
    print(
        f"## Gangs and topology: {len(nodes):,} nodes x {GPUS} GPUs, 4 fabrics x 16 blocks x 8"
        f" racks x 4 nodes (Python {sys.version.split()[0]}, one core)"
    )
    print("\n### Job models fitted to the trace summaries")
    print(
        "| trace | mean GPUs/job | max GPUs | sigma (log2 GPUs) | P(1 GPU) | P(>= 9 nodes)"
        " | beta (T ~ G^beta) | GPU-time in jobs >= 8 GPUs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in mixes.values():
        big = sum(p for j, p in enumerate(m.pmf) if 2**j > 8 * GPUS)
        print(
            f"| {m.name} | {m.mean_gpus:.2f} | {m.max_gpus} | {m.sigma:.2f} | {m.pmf[0]:.2f}"
            f" | {big:.3f} | {m.beta:.2f} | {m.share_ge8():.0%} |"
        )
    print(
        f"Check: Earth measured {EARTH_SHARE:.0%} of running GPUs in jobs >= 8 GPUs;"
        f" the fitted Earth model gives {mixes['Earth'].share_ge8():.0%}."
    )
    loads = [float(x) for x in args.loads.split(",")]
    verdicts = []
    for spec in args.mixes.split(","):
        name, _, n = spec.partition(":")
        count = int(n) if n else args.jobs
        mix = mixes[name]
        print(f"\n### {name} ({count:,} arrivals per run)")
        for load in loads:
            jobs = sample_jobs(
                mix, count, load, len(nodes), seed=args.seed * 1000 + round(load * 100)
            )
            counts = {c[2]: 0 for c in CLASSES}
            for j in jobs:
                counts[size_class(j.nodes)] += 1
            mix_s = ", ".join(f"{k}: {v}" for k, v in counts.items())
            print(
                f"\noffered load {load:.0%} ({window_load(jobs, len(nodes)):.1%} inside the"
                f" measured window): jobs by nodes {mix_s}; typical (GPU-time median) request"
                f" {typical_nodes(jobs)} nodes"
            )
            print(
                "| policy | allocation | delay p50 / p95: 1 | 2-8 | 9-64 | 65+"
                " | gangs in min blocks: ceil(N/32) | given free | extra blocks / gang"
                " | stranded, % of free: rack | block | fabric | free | CPU s |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for policy in args.policies.split(","):
                r = simulate(nodes, jobs, policy, load)
                cells = [
                    f"{fmt_delay(pct(d, 0.5))} / {fmt_delay(pct(d, 0.95))}"
                    for d in (r.delays[c[2]] for c in CLASSES)
                ]
                free_nodes = r.free_share * len(nodes)
                strand = [
                    f"{r.stranded[k] / free_nodes:.0%}" if free_nodes else "-"
                    for k in ("rack", "block", "fabric")
                ]
                g = max(r.gangs, 1)
                print(
                    f"| {policy} | {r.allocation:.1%} | "
                    + " | ".join(cells)
                    + f" | {r.at_ceil / g:.1%} | {r.at_true / g:.1%} | {r.extra_blocks / g:.2f}"
                    + " | "
                    + " | ".join(strand)
                    + f" | {r.free_share:.0%} | {r.seconds:.1f} |",
                    flush=True,
                )
                if load <= 0.8:
                    verdicts.append((name, load, policy, r.at_ceil / g, r.at_true / g))
    print("\n### Against target: >= 95% of multi-node gangs in the minimum number of blocks")
    print("| trace | load | policy | ceil(N/32) | given free | target |")
    print("|---|---:|---|---:|---:|---|")
    for name, load, policy, a, b in verdicts:
        ok = (
            "met"
            if a >= TARGET_MIN_BLOCKS
            else ("met (given free)" if b >= TARGET_MIN_BLOCKS else "missed")
        )
        print(f"| {name} | {load:.0%} | {policy} | {a:.1%} | {b:.1%} | {ok} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
