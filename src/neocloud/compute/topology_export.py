"""A cluster's placement as its tenant's schedulers read topology (pure: plain data in, text out).

Three formats, each from the members' hostnames and the fleet topology path each member's node
sits on (``{level: domain}``, e.g. region, zone, fabric, block, rack):

- ``slurm-tree``: ``topology.conf`` for Slurm's ``topology/tree`` plugin. One
  ``SwitchName=… Nodes=…`` line per leaf domain (the lowest level), then one
  ``SwitchName=… Switches=…`` line per domain of each level above, up to the top of the
  network (the ``fabric`` level when the fleet has one: regions and zones are not switches,
  and two fabrics share no switch, so a cluster across fabrics gets one tree per fabric, and
  Slurm keeps each job inside one, as it must).
- ``slurm-block``: ``topology.conf`` for Slurm's ``topology/block`` plugin. One
  ``BlockName=… Nodes=…`` line per block-level domain, listed so that blocks under one parent
  are adjacent (the plugin pairs neighbouring blocks into larger ones), then ``BlockSizes=``.
  The plugin refuses a block with fewer nodes than the base block size (the first value) and
  takes each later value only as the base times a power of two; without the line it takes the
  first block's node count as the base, so a smaller block after it would be refused. So the
  base is the smallest block's member count and the values double from there until they cover
  every block (as the plugin's own default does).
- ``k8s-labels``: a shell script of ``kubectl label node`` lines that sets NVIDIA Topograph's
  labels on every member: ``network.topology.nvidia.com/leaf`` (the lowest level), ``/spine``
  (the level above it), ``/core`` (the top network level), and ``/accelerator`` only where the
  lowest level is a multi-node NVLink domain (rack-scale systems such as GB200 NVL72).
  A script, not a YAML document, because Kubernetes has no file that labels existing nodes:
  the tenant pipes it to ``sh`` with ``kubectl`` pointed at their cluster.

Node names are the hostnames the members' machines take (their Kubernetes node names and Slurm
node names when the tenant keeps the defaults).

References: https://slurm.schedmd.com/topology.conf.html (tree and block sections),
https://slurm.schedmd.com/topology.html, https://docs.nvidia.com/topograph/engines/kubernetes
and https://docs.nvidia.com/topograph/reference/node-labels-and-annotations (label keys).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from neocloud.kernel.errors import InvalidRequest

FORMATS: tuple[str, ...] = ("slurm-tree", "slurm-block", "k8s-labels")
MEDIA_TYPE = "text/plain"
TOPOGRAPH_PREFIX = "network.topology.nvidia.com/"
# Topograph's default keys; its Helm chart can rename them (topologyNodeLabels).
ACCELERATOR, LEAF, SPINE, CORE = (
    f"{TOPOGRAPH_PREFIX}{k}" for k in ("accelerator", "leaf", "spine", "core")
)
SLURM_NAME_MAX = 64  # "cannot be longer than 64 characters" (topology.conf, SwitchName)
MAX_BLOCK_LEVEL = 15  # the block plugin takes base x 2**0 … base x 2**15


@dataclass(frozen=True)
class Member:
    """One placed member: the hostname its machine takes and its node's ``{level: domain}``."""

    hostname: str
    path: Mapping[str, str]


@dataclass(frozen=True)
class Layout:
    """What the fleet's levels mean to a scheduler.

    ``switch_levels``: the network levels, top first (the last one is the leaf);
    ``block_level``: the level whose domains become Slurm blocks; ``accelerator_level``: the
    level whose domains are NVLink domains, if nodes share one (else ``None``)."""

    switch_levels: tuple[str, ...]
    block_level: str
    accelerator_level: str | None = None


def layout_for(levels: Sequence[str], *, rack_scale_nvlink: bool = False) -> Layout:
    """The layout of a fleet with ``levels`` (top first).

    The network starts at ``fabric`` when the fleet has that level (above it: places, not
    switches), else at the top level. Blocks are the ``block`` level when there is one (a leaf
    switch's nodes in the fleet's own specs), else the level above the lowest. For rack-scale
    NVLink systems the lowest level (the rack) is the NVLink domain: it becomes the Slurm block
    (what the block plugin is for) and Topograph's accelerator domain."""
    if not levels:
        raise ValueError("a fleet has at least one topology level")
    top = levels.index("fabric") if "fabric" in levels else 0
    switches = tuple(levels[top:]) or (levels[-1],)
    if rack_scale_nvlink:
        return Layout(switches, levels[-1], accelerator_level=levels[-1])
    if "block" in levels:
        return Layout(switches, "block")
    return Layout(switches, levels[-2] if len(levels) >= 2 else levels[-1])


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of ``FORMATS``; else a 400 that names the ``format`` parameter."""
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"unknown topology format {fmt[:40]!r}: use one of {', '.join(FORMATS)}",
            code="unknown_format",
            param="format",
        )
    return fmt


# ------------------------------------------------------------------------------------ hostlists


def natural_key(name: str) -> tuple[tuple[int, str | int], ...]:
    """Sort key that orders ``n2`` before ``n10``."""
    return tuple(
        (1, int(part)) if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name)
    )


def hostlist(names: Iterable[str]) -> str:
    """Slurm hostlist expression for ``names``: runs of consecutive trailing numbers of one
    width become ``prefix[a-b]`` (``gpu-[001-004]``, ``train-[0-9],train-[10-15]``); others stay
    as they are. Each distinct name appears exactly once."""
    runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    plain: list[str] = []
    for name in sorted(set(names), key=natural_key):
        m = re.fullmatch(r"(.*?)(\d+)", name)
        if m is None or not m.group(1) or m.group(1)[-1] in "[],":
            plain.append(name)
        else:
            runs[(m.group(1), len(m.group(2)))].append(int(m.group(2)))
    parts: list[tuple[str, str]] = [(n, n) for n in plain]
    for (prefix, width), numbers in runs.items():
        pieces = []
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            pieces.append(
                f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}"
            )
            if n is not None:
                start = prev = n
        first = f"{prefix}{numbers[0]:0{width}d}"
        if len(numbers) == 1:
            parts.append((first, first))
        else:
            parts.append((first, f"{prefix}[{','.join(pieces)}]"))
    return ",".join(text for _, text in sorted(parts, key=lambda p: natural_key(p[0])))


# ------------------------------------------------------------------------------------ renderers


def _switch_names(members: Sequence[Member], levels: Sequence[str]) -> dict[tuple[str, str], str]:
    """Slurm name per (level, domain): the domain's name, qualified with its level where two
    levels use one name (Slurm's switch and block names share one namespace per file)."""
    used: dict[str, set[str]] = defaultdict(set)
    for m in members:
        for level in levels:
            used[m.path[level]].add(level)
    names = {}
    for name, at in used.items():
        for level in at:
            full = name if len(at) == 1 else f"{level}-{name}"
            if len(full) > SLURM_NAME_MAX:
                full = f"{level}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
            names[(level, name)] = full
    return names


def _header(kind: str, title: str, members: Sequence[Member], lines: Sequence[str]) -> list[str]:
    return [
        f"# {kind} for cluster {title}: {len(members)} nodes, generated by neocloud",
        *(f"# {line}" for line in lines),
        "",
    ]


def slurm_tree(members: Sequence[Member], layout: Layout, *, title: str) -> str:
    """``topology.conf`` for ``TopologyPlugin=topology/tree`` (leaf switches first)."""
    levels = layout.switch_levels
    names = _switch_names(members, levels)
    out = _header(
        "Slurm topology.conf (topology/tree)",
        title,
        members,
        [
            "format: https://slurm.schedmd.com/topology.conf.html; slurm.conf: "
            "TopologyPlugin=topology/tree",
            f"switch levels, leaf first: {', '.join(reversed(levels))}",
        ],
    )
    leaf = levels[-1]
    hosts: dict[str, list[str]] = defaultdict(list)
    for m in members:
        hosts[names[(leaf, m.path[leaf])]].append(m.hostname)
    for switch in sorted(hosts, key=natural_key):
        out.append(f"SwitchName={switch} Nodes={hostlist(hosts[switch])}")
    for upper, lower in zip(reversed(levels[:-1]), reversed(levels[1:]), strict=True):
        children: dict[str, set[str]] = defaultdict(set)
        for m in members:
            children[names[(upper, m.path[upper])]].add(names[(lower, m.path[lower])])
        for switch in sorted(children, key=natural_key):
            out.append(f"SwitchName={switch} Switches={hostlist(children[switch])}")
    return "\n".join(out) + "\n"


def block_sizes(counts: Sequence[int]) -> list[int]:
    """``BlockSizes`` for blocks of ``counts`` nodes: the smallest count as the base, then the
    base doubled until the sizes cover every block (at most base x 2**15)."""
    base = min(counts)
    sizes = [base]
    level = 0
    while 2**level < len(counts) and level < MAX_BLOCK_LEVEL:
        level += 1
        sizes.append(base * 2**level)
    return sizes


def slurm_block(members: Sequence[Member], layout: Layout, *, title: str) -> str:
    """``topology.conf`` for ``TopologyPlugin=topology/block``."""
    level = layout.block_level
    names = _switch_names(members, [level])
    blocks: dict[tuple[tuple[int, str | int], ...], tuple[str, list[str]]] = {}
    levels = list(layout.switch_levels)
    above = levels[: levels.index(level)] if level in levels else []
    for m in members:
        # Sorted by the path down to the block: a parent's blocks are neighbours.
        key = tuple(k for lv in [*above, level] for k in natural_key(m.path[lv]))
        blocks.setdefault(key, (names[(level, m.path[level])], []))[1].append(m.hostname)
    ordered = [blocks[k] for k in sorted(blocks)]
    sizes = block_sizes([len(h) for _, h in ordered])
    out = _header(
        "Slurm topology.conf (topology/block)",
        title,
        members,
        [
            "format: https://slurm.schedmd.com/topology.conf.html; slurm.conf: "
            "TopologyPlugin=topology/block",
            f"one block per {level} domain; neighbouring blocks share the level above it",
            f"BlockSizes: the base is the smallest block ({sizes[0]} nodes), then the base "
            "times powers of two until they cover every block",
        ],
    )
    for name, hosts in ordered:
        out.append(f"BlockName={name} Nodes={hostlist(hosts)}")
    out.append(f"BlockSizes={','.join(str(s) for s in sizes)}")
    return "\n".join(out) + "\n"


def labels_of(member: Member, layout: Layout) -> dict[str, str]:
    """Topograph's labels for one member: leaf, spine, core as the levels allow; the
    accelerator only where nodes share an NVLink domain."""
    levels = layout.switch_levels
    labels = {LEAF: member.path[levels[-1]]}
    if len(levels) >= 2:
        labels[SPINE] = member.path[levels[-2]]
    if len(levels) >= 3:
        labels[CORE] = member.path[levels[0]]
    if layout.accelerator_level is not None:
        labels[ACCELERATOR] = member.path[layout.accelerator_level]
    return labels


def k8s_labels(members: Sequence[Member], layout: Layout, *, title: str) -> str:
    """A POSIX shell script of ``kubectl label node --overwrite HOST KEY=VALUE …`` lines."""
    levels = layout.switch_levels
    keys = [f"leaf={levels[-1]}"]
    if len(levels) >= 2:
        keys.append(f"spine={levels[-2]}")
    if len(levels) >= 3:
        keys.append(f"core={levels[0]}")
    if layout.accelerator_level is not None:
        keys.append(f"accelerator={layout.accelerator_level} (the NVLink domain)")
    out = [
        "#!/bin/sh",
        *_header(
            "Kubernetes node labels (NVIDIA Topograph's keys)",
            title,
            members,
            [
                "keys: https://docs.nvidia.com/topograph/reference/node-labels-and-annotations",
                f"levels: {', '.join(keys)}",
                "run with kubectl pointed at your Kubernetes cluster: sh this-file",
            ],
        ),
        "set -e",
    ]
    for m in sorted(members, key=lambda m: natural_key(m.hostname)):
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(labels_of(m, layout).items()))
        out.append(f"kubectl label node --overwrite {shlex.quote(m.hostname)} {pairs}")
    return "\n".join(out) + "\n"


def render(fmt: str, members: Sequence[Member], layout: Layout, *, title: str) -> str:
    """The members' topology in ``fmt`` (one of ``FORMATS``)."""
    if not members:
        raise ValueError("no members to render")
    renderers = {"slurm-tree": slurm_tree, "slurm-block": slurm_block, "k8s-labels": k8s_labels}
    return renderers[check_format(fmt)](members, layout, title=title)
