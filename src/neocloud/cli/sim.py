"""CLI for simulation: ``neocloud sim alibaba`` (trace replay through placement) and
``neocloud sim cluster`` (the real compute service on a virtual clock)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neocloud.cli.output import err, out, print_json, print_object, print_table
from neocloud.kernel.errors import NeocloudError

if TYPE_CHECKING:
    from neocloud.sim.cluster import ProgressCallback, SimConfig

sim_app = typer.Typer(help="Replay GPU-cluster traces through the placement code.")


@sim_app.command("alibaba")
def alibaba(
    nodes: Annotated[
        Path, typer.Option("--nodes", exists=True, dir_okay=False, help="openb_node_list_*.csv")
    ],
    pods: Annotated[
        Path, typer.Option("--pods", exists=True, dir_okay=False, help="openb_pod_list_*.csv")
    ],
    policy: Annotated[
        list[str],
        typer.Option("--policy", help="Policy name, comma list or 'all' (repeatable)"),
    ],
    seeds: Annotated[str, typer.Option("--seeds", help="e.g. 42-51 or 42,43")] = "42-51",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per policy")] = False,
) -> None:
    """The FGD paper's experiment (ATC'23) on the Alibaba GPU v2023 trace: the GPU allocation
    ratio (%) at each arrived workload (% of GPU capacity, 0 to 130), mean over seeds."""
    from neocloud.placement.slice_policies import slice_policy_names
    from neocloud.sim.alibaba import parse_seeds, simulate

    names: list[str] = []
    for item in policy:
        for name in item.split(","):
            name = name.strip()
            if name == "all":
                names.extend(slice_policy_names())
            elif name:
                names.append(name)
    try:
        seed_list = parse_seeds(seeds)
        results = []
        for name in dict.fromkeys(names):
            result = simulate(nodes, pods, name, seed_list)
            results.append(result)
            if as_json:
                sys.stdout.write(json.dumps(result) + "\n")
                sys.stdout.flush()
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if not as_json:
        rows = [
            {
                "policy": r["policy"],
                "workload": r["workload"],
                **{f"{p}%": r["allocation_ratio"].get(str(p), "") for p in (50, 100, 130)},
            }
            for r in results
        ]
        cols = [("POLICY", "policy"), ("WORKLOAD", "workload")]
        cols += [(f"ALLOC@{p}%", f"{p}%") for p in (50, 100, 130)]
        print_table(rows, cols, title=f"GPU allocation ratio (%), seeds {seeds}")
        out.print("x-axis: arrived workload as % of cluster GPU capacity")


def stdout_is_terminal() -> bool:
    """Whether a person watches stdout (a progress bar helps) rather than a pipe or a file."""
    return sys.stdout.isatty()


@sim_app.command("cluster")
def cluster(
    days: Annotated[
        float, typer.Option("--days", min=0.01, max=365, help="Virtual days to run")
    ] = 7.0,
    fleet_gpus: Annotated[
        int, typer.Option("--fleet-gpus", min=8, help="H100 GPUs in the simulated fleet")
    ] = 1024,
    arrivals: Annotated[
        str,
        typer.Option(
            "--arrivals",
            help="'synthetic' (Poisson arrivals) or a CSV / JSONL file (format below)",
        ),
    ] = "synthetic",
    arrivals_per_hour: Annotated[
        float,
        typer.Option("--arrivals-per-hour", min=0, help="Synthetic requests per hour (Poisson)"),
    ] = 6.0,
    max_wait: Annotated[
        int | None,
        typer.Option(
            "--max-wait",
            min=1,
            max=7 * 86400,
            help="Synthetic requests queue this many seconds for capacity (default: fail at once)",
        ),
    ] = None,
    failure_rate: Annotated[
        float | None,
        typer.Option("--failure-rate", help="per 1,000 node-days (default: Llama 3's, ~3.8)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (arrivals, failures)")] = 0,
    reservations_per_day: Annotated[
        float,
        typer.Option(
            "--reservations-per-day",
            min=0,
            help="Capacity blocks asked for per day (1-2 or 7-14 days, 1-16 nodes, 0-3 days ahead)",
        ),
    ] = 0.0,
    admission_policy: Annotated[
        str,
        typer.Option("--admission-policy", help="How blocks are sold: fcfs or bid_price"),
    ] = "fcfs",
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the report (settings included) as one JSON object"),
    ] = False,
) -> None:
    """Run the real compute service (scheduler, placement, reconciler, burn-in, sim driver) on a
    virtual clock with arrivals and node failures; report allocation, queueing per size class,
    preemptions, failures, time to heal and billing facts, with the settings used. A week on
    1,024 GPUs takes a minute or two: on a terminal a progress bar shows the simulated time.

    \b
    --arrivals FILE: CSV with a header row, or JSON Lines (one object a line); fields:
      at_s           seconds after the start (required, >= 0)
      instance_type  e.g. 8xH100 (a single instance), or
      node_count     whole nodes of a cluster, with gpu_model (default H100)
      class          on_demand (default) or spot
      duration_s     how long it runs once running (required, > 0)
      max_wait_s     optional: queue that long for capacity instead of failing at once
    e.g.  at_s,instance_type,node_count,gpu_model,class,duration_s,max_wait_s
          0,8xH100,,,on_demand,3600,
          60,,16,H100,spot,7200,600
    The fleet is H100 (--fleet-gpus); --days bounds the run.
    """
    from neocloud.sim.cluster import LLAMA3_RATE, SimConfig, run

    cfg = SimConfig(
        days=days,
        fleet_gpus=fleet_gpus,
        arrivals_per_hour=arrivals_per_hour,
        failure_rate=LLAMA3_RATE if failure_rate is None else failure_rate,
        seed=seed,
        arrivals=arrivals,
        max_wait_s=max_wait,
        reservations_per_day=reservations_per_day,
        admission_policy=admission_policy,
    )
    try:
        with _progress_bar(days, enabled=not as_json and stdout_is_terminal()) as progress:
            report = run(cfg, progress=progress)
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        print_json(asdict(report))
        return
    out.print(f"[bold]settings[/bold]: {cluster_settings(cfg)}")
    print_object(
        {
            k: v
            for k, v in asdict(report).items()
            if k not in ("classes", "config", "billing", "reservations")
        },
        as_json=False,
    )
    print_table(
        [{"class": k, **v} for k, v in report.classes.items()],
        [
            ("SIZE CLASS", "class"),
            ("REQUESTS", lambda r: int(r["requests"])),
            ("ADMITTED", "admitted_share"),
            ("MEAN TIME TO RUNNING S", "mean_time_to_running_s"),
            ("NO CAPACITY", lambda r: int(r["no_capacity"])),
            ("STILL QUEUED", lambda r: int(r["still_queued"])),
        ],
    )
    if report.reservations:
        out.print("[bold]reservations[/bold]")
        print_object(report.reservations, as_json=False)
    bill = report.billing
    print_table(
        [{"class": k, **v} for k, v in bill.get("classes", {}).items()],
        [
            ("CLASS", "class"),
            ("GPU-H ALLOCATED", "gpu_hours_allocated"),
            ("GPU-H ON FAILED NODES", "gpu_hours_on_failed_nodes"),
            ("GPU-H BILLED", "gpu_hours_billed"),
            (f"AMOUNT {bill.get('currency', '')}", "amount"),
        ],
        title=f"billing facts ({bill.get('price_book')}), total {bill.get('total')}",
    )


def cluster_settings(cfg: SimConfig) -> str:
    """The settings a ``sim cluster`` run used, in one line (what to quote beside its result)."""
    from neocloud.sim.cluster import LLAMA3_RATE

    rate = f"{cfg.failure_rate:g} per 1,000 node-days"
    if cfg.failure_rate == LLAMA3_RATE:
        rate = f"{cfg.failure_rate:.2f} per 1,000 node-days (Llama 3's)"
    if cfg.arrivals == "synthetic":
        wait = "fail at once" if cfg.max_wait_s is None else f"wait up to {cfg.max_wait_s} s"
        arrivals = (
            f"synthetic, {cfg.arrivals_per_hour:g} per hour, mean {cfg.mean_hours:g} h, "
            f"{cfg.spot_share:.0%} spot, {wait} when full"
        )
    else:
        arrivals = f"from {cfg.arrivals}"
    blocks = ""
    if cfg.reservations_per_day > 0:
        blocks = (
            f"; reservations {cfg.reservations_per_day:g} per day sold by {cfg.admission_policy}"
        )
    return (
        f"days {cfg.days:g}; fleet {cfg.fleet_gpus:,} H100 GPUs; failure rate {rate}, "
        f"repair {cfg.repair_hours:g} h; seed {cfg.seed}; arrivals {arrivals}{blocks}"
    )


@contextmanager
def _progress_bar(days: float, *, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A progress bar over the ``days`` simulated, on stdout (gone once done); None when not
    ``enabled``."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("day {task.completed:.1f} of {task.total:g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("sim", total=days)

        def advance(done_s: float, total_s: float) -> None:
            bar.update(task, completed=done_s / 86400, total=total_s / 86400)

        yield advance
