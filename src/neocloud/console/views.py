"""What the operator pages draw, computed from the API's answers (plain data in, plain data out).

The heatmap is one cell per block (or per rack once a fabric is opened), not one element per
node: the domains come from ``/fleet/topology`` and each one's node counts by state and health
from ``/fleet/summary?group_by=block&health=true``. At 31,250 nodes that is 977 block cells (or
at most a fabric's 512 racks) drawn on one canvas from a JSON block, so the page stays light
whatever the fleet's size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# Node states grouped as the heatmap colours them; the legend lists them in this order.
STATE_GROUPS: dict[str, str] = {
    "available": "free",
    "allocated": "busy",
    "provisioning": "busy",
    "in_use": "busy",
    "releasing": "busy",
    "wiping": "busy",
    "draining": "held",
    "cordoned": "held",
    "maintenance": "held",
    "enrolled": "setup",
    "burn_in": "setup",
    "repair": "broken",
    "failed": "broken",
    "retired": "gone",
}
GROUPS = ("free", "busy", "held", "setup", "broken", "gone")
HEALTHS = ("healthy", "warning", "failed")  # the heatmap's health colouring, in this order


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One GPU model's line of the fleet overview: GPUs per state, and the total."""

    gpu_model: str
    by_state: dict[str, int]
    total: int


def fleet_matrix(summary: dict[str, Any]) -> tuple[list[str], list[ModelRow], dict[str, int]]:
    """``/fleet/summary`` as a GPU model x state matrix of GPU counts: the states present (in
    lifecycle order), one row per model, and the column totals."""
    order = list(STATE_GROUPS)
    cells: dict[str, dict[str, int]] = defaultdict(dict)
    for line in summary["data"]:
        row = cells[line["gpu_model"]]
        row[line["state"]] = row.get(line["state"], 0) + int(line["gpus"])
    present = {s for row in cells.values() for s in row}
    states = [s for s in order if s in present] + sorted(present - set(order))
    rows = [
        ModelRow(model, {s: by.get(s, 0) for s in states}, sum(by.values()))
        for model, by in sorted(cells.items())
    ]
    totals = {s: sum(r.by_state[s] for r in rows) for s in states}
    totals["total"] = sum(r.total for r in rows)
    return states, rows, totals


@dataclass(frozen=True, slots=True)
class HealthRow:
    """One GPU model x health line of the fleet overview: GPUs per state, and the total."""

    gpu_model: str
    health: str
    by_state: dict[str, int]
    total: int


def fleet_health_rows(summary: dict[str, Any], states: list[str]) -> list[HealthRow]:
    """``/fleet/summary?health=true`` as GPU model x health rows over ``states`` (the columns
    of ``fleet_matrix``): the overview's third dimension. Healths in ``HEALTHS`` order, any
    other after them; a model shows only the healths its nodes have."""
    cells: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for line in summary["data"]:
        health = line.get("health") or "unknown"
        row = cells[(line["gpu_model"], health)]
        row[line["state"]] = row.get(line["state"], 0) + int(line["gpus"])
    rank = {h: i for i, h in enumerate(HEALTHS)}
    keys = sorted(cells, key=lambda k: (k[0], rank.get(k[1], len(HEALTHS)), k[1]))
    return [
        HealthRow(m, h, {s: cells[(m, h)].get(s, 0) for s in states}, sum(cells[(m, h)].values()))
        for m, h in keys
    ]


def heatmap_cells(
    topology: dict[str, Any], summary: dict[str, Any], level: str | None = None
) -> dict[str, Any]:
    """One cell per domain of ``level`` (the leaf level, racks, unless told): where it sits,
    its GPU model, its nodes per state group and per health.

    ``topology`` is ``/fleet/topology``'s answer, ``summary`` is ``/fleet/summary?group_by=
    rack&health=true``. Compact, since a 31,250-node fleet has ~7,800 racks: ``parents`` lists
    each path above a rack once ("region/zone/fabric/block"), ``models`` each GPU model once,
    and a cell is ``[parent index, rack, model index, *nodes per group, *nodes per health]``
    with ``groups`` then ``healths`` the legends' order (the page colours a cell by either).
    Cells are ordered by path so that a fabric's blocks sit together."""
    levels: list[str] = list(topology["levels"])
    leaf = level or (levels[-1] if levels else "rack")
    # A domain's parent is the whole path above it ("r1/r1a/r1a-ib01/r1a-ib01-b01").
    above = {d["name"]: d["parent"] for d in topology["domains"] if d["level"] == leaf}
    width = len(GROUPS) + len(HEALTHS)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * width)
    rack_model: dict[str, str] = {}
    index = {g: i for i, g in enumerate(GROUPS)}
    h_index = {h: len(GROUPS) + i for i, h in enumerate(HEALTHS)}
    for line in summary["data"]:
        rack = line["domain"]
        if rack is None:
            continue
        nodes = int(line["nodes"])
        row = counts[rack]
        row[index[STATE_GROUPS.get(line["state"], "gone")]] += nodes
        health = line.get("health")
        if health is not None:
            row[h_index.get(health, h_index["failed"])] += nodes
        rack_model[rack] = line["gpu_model"]
    parents = sorted({above.get(rack, "") for rack in counts})
    models = sorted(set(rack_model.values()))
    p_index = {p: i for i, p in enumerate(parents)}
    m_index = {m: i for i, m in enumerate(models)}
    cells = sorted(
        [p_index[above.get(rack, "")], rack, m_index[rack_model[rack]], *n]
        for rack, n in counts.items()
    )
    return {
        "levels": levels,
        "leaf": leaf,  # the level of the cells
        "groups": list(GROUPS),
        "healths": list(HEALTHS),
        "parents": parents,
        "models": models,
        "cells": cells,
    }


def tenant_cells(tenants: dict[str, Any], total_gpus: dict[str, int]) -> dict[str, Any]:
    """``/capacity/tenants`` per heatmap cell, aggregated: the org holding most of the cell's
    GPUs, its GPUs, all GPUs held there and the cell's GPUs (so the page can show a share).
    ``orgs`` lists each org once; a cell is ``domain: [org index, org GPUs, held, GPUs]``."""
    held: dict[str, int] = defaultdict(int)
    top: dict[str, tuple[str, int]] = {}
    for line in tenants["data"]:
        domain, org, gpus = line["domain"], line["org_id"], int(line["gpus"])
        held[domain] += gpus
        if domain not in top or gpus > top[domain][1]:
            top[domain] = (org, gpus)
    orgs = sorted({org for org, _ in top.values()})
    index = {o: i for i, o in enumerate(orgs)}
    cells = {d: [index[org], gpus, held[d], total_gpus.get(d, 0)] for d, (org, gpus) in top.items()}
    return {"orgs": orgs, "tenants": cells}


def gantt_rows(
    reservations: list[dict[str, Any]], nodes_block: dict[str, str]
) -> list[dict[str, Any]]:
    """Reservations as bars on one row per block: each bar's start, end, org and state.

    ``nodes_block`` maps a node id to its block; a reservation spanning several blocks shows
    on each of them."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reservations:
        blocks = sorted({nodes_block.get(n, "unplaced") for n in r["node_ids"]}) or ["unplaced"]
        for block in blocks:
            rows[block].append(
                {
                    "id": r["id"],
                    "org": r["org_id"],
                    "start": r["start"],
                    "end": r["end"],
                    "state": r["state"],
                    "nodes": r["node_count"],
                }
            )
    return [{"block": b, "bars": bars} for b, bars in sorted(rows.items())]
