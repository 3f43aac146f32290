"""Builders for placement tests: a regular fleet and short request constructors."""

from __future__ import annotations

from typing import Any

from neocloud.placement import NodeSnapshot, PlacementEngine


def grid_fleet(
    fabrics: int = 2,
    blocks: int = 2,
    racks: int = 2,
    nodes: int = 2,
    *,
    gpu_model: str = "H100",
    gpus: int = 8,
) -> list[NodeSnapshot]:
    """``fabrics`` x ``blocks`` x ``racks`` x ``nodes`` nodes named ``n-f-b-r-i``."""
    out = []
    for f in range(fabrics):
        for b in range(blocks):
            for r in range(racks):
                for i in range(nodes):
                    out.append(
                        NodeSnapshot(
                            f"n-{f}-{b}-{r}-{i}",
                            gpu_model,
                            gpus,
                            16 * gpus,
                            128 * gpus,
                            ("reg", "zone", f"f{f}", f"f{f}b{b}", f"f{f}b{b}r{r}"),
                        )
                    )
    return out


def engine(policy: str = "default", **kw: Any) -> PlacementEngine:
    return PlacementEngine(grid_fleet(**kw), policy=policy)
