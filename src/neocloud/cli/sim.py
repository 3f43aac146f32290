"""CLI for trace-driven simulation: ``neocloud sim alibaba``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from neocloud.cli.output import err, out, print_table
from neocloud.kernel.errors import NeocloudError

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
