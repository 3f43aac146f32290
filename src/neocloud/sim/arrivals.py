"""Arrivals for ``neocloud sim cluster``: read from a file (CSV or JSON Lines) or drawn.

One arrival per row (CSV with a header) or per line (JSONL, one object each); fields:

- ``at_s`` (required): seconds after the simulation starts (0 or more);
- ``instance_type`` (e.g. ``8xH100``, ``1xH100``): a single instance; or
- ``node_count`` with ``gpu_model`` (default ``H100``): a cluster of that many whole nodes;
- ``class``: ``on_demand`` (default) or ``spot``;
- ``duration_s`` (required, more than 0): how long it runs once ``running``;
- ``max_wait_s`` (optional): it waits (queued) that long for capacity instead of failing with
  ``no_capacity`` at once.

A row that breaks these rules stops the run with its line number and field.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.compute.domain import MAX_QUEUE_WAIT_S, resolve_instance_type
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.kernel.errors import ValidationFailed

FIELDS = ("at_s", "instance_type", "node_count", "gpu_model", "class", "duration_s", "max_wait_s")
CLASSES = ("on_demand", "spot")


@dataclass(frozen=True)
class Arrival:
    at_s: float
    kind: str  # "instance" | "cluster"
    size: int  # GPUs of an instance, nodes of a cluster
    gpu_model: str  # short name (H100)
    cls: str
    duration_s: float
    max_wait_s: int | None = None

    @property
    def instance_type(self) -> str:
        return f"{self.size}x{self.gpu_model}"

    @property
    def label(self) -> str:
        """The size class it is reported under."""
        if self.kind == "cluster":
            return f"{self.size} nodes"
        return "1 GPU" if self.size == 1 else f"{self.size} GPUs"


def _bad(line: int, param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"arrivals line {line}: {message}", code="invalid_arrival", param=param)


def _number(row: dict[str, Any], key: str, line: int, *, required: bool) -> float | None:
    raw = row.get(key)
    if raw is None or raw == "":
        if required:
            raise _bad(line, key, f"{key} is required")
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _bad(line, key, f"{key} must be a number, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(line, key, f"{key} must be finite")
    return value


def parse_row(row: dict[str, Any], line: int) -> Arrival:
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise _bad(line, sorted(unknown)[0], f"unknown fields {', '.join(sorted(unknown))}")
    at = _number(row, "at_s", line, required=True)
    duration = _number(row, "duration_s", line, required=True)
    assert at is not None
    assert duration is not None
    if at < 0:
        raise _bad(line, "at_s", "at_s must be 0 or more")
    if duration <= 0:
        raise _bad(line, "duration_s", "duration_s must be more than 0")
    cls = str(row.get("class") or "on_demand")
    if cls not in CLASSES:
        raise _bad(line, "class", f"class must be on_demand or spot, not {cls!r}")
    wait = _number(row, "max_wait_s", line, required=False)
    if wait is not None and not (1 <= wait <= MAX_QUEUE_WAIT_S and wait == int(wait)):
        raise _bad(line, "max_wait_s", f"max_wait_s must be whole seconds, 1 to {MAX_QUEUE_WAIT_S}")
    max_wait = None if wait is None else int(wait)
    itype, nodes = row.get("instance_type") or None, row.get("node_count")
    if (itype is None) == (nodes is None or nodes == ""):
        raise _bad(line, "instance_type", "give either instance_type or node_count")
    try:
        if itype is not None:
            t = resolve_instance_type(str(itype))
            model = resolve_gpu_model(t.gpu_model)
            short = model.aliases[0] if model.aliases else model.id
            return Arrival(at, "instance", t.gpus, short, cls, duration, max_wait)
        count = _number(row, "node_count", line, required=True)
        assert count is not None
        if count != int(count) or not 1 <= count <= 4096:
            raise _bad(line, "node_count", "node_count must be a whole number, 1 to 4096")
        model = resolve_gpu_model(str(row.get("gpu_model") or "H100"))
        short = model.aliases[0] if model.aliases else model.id
        return Arrival(at, "cluster", int(count), short, cls, duration, max_wait)
    except ValidationFailed as exc:
        if exc.code == "invalid_arrival":
            raise
        raise _bad(line, exc.param or "instance_type", exc.message) from None


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or first.startswith("{"):
        for i, ln in enumerate(text.splitlines(), start=1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as exc:
                raise _bad(i, "line", f"not JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise _bad(i, "line", "each line is one JSON object")
            yield i, obj
        return
    reader = csv.DictReader(text.splitlines())
    for i, row in enumerate(reader, start=2):  # line 1 is the header
        if None in row:
            raise _bad(i, "line", "more values than header columns")
        yield i, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}


def load_arrivals(path: Path) -> list[Arrival]:
    """Every arrival of the file, in time order (ties keep file order)."""
    try:
        rows = list(_rows(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            f"cannot read arrivals file {path}: {exc}", code="invalid_arrival", param="arrivals"
        ) from None
    out = [parse_row(row, line) for line, row in rows]
    if not out:
        raise ValidationFailed(
            f"arrivals file {path} has no arrivals", code="invalid_arrival", param="arrivals"
        )
    return sorted(out, key=lambda a: a.at_s)


# (label, weight, kind, size): instances of N GPUs, clusters of N nodes
SIZES: tuple[tuple[str, float, str, int], ...] = (
    ("1 GPU", 0.30, "instance", 1),
    ("2 GPUs", 0.15, "instance", 2),
    ("4 GPUs", 0.15, "instance", 4),
    ("8 GPUs", 0.20, "instance", 8),
    ("4 nodes", 0.10, "cluster", 4),
    ("16 nodes", 0.07, "cluster", 16),
    ("64 nodes", 0.03, "cluster", 64),
)


def synthetic(
    rng: random.Random,
    *,
    seconds: float,
    per_hour: float,
    mean_hours: float,
    spot_share: float,
    max_wait_s: int | None,
) -> list[Arrival]:
    """Poisson arrivals over ``seconds``, sizes drawn from ``SIZES``, exponential durations."""
    out: list[Arrival] = []
    if per_hour <= 0:
        return out
    t = 0.0
    total = sum(w for _, w, _, _ in SIZES)
    while True:
        t += rng.expovariate(per_hour) * 3600
        if t >= seconds:
            return out
        x = rng.random() * total
        kind, size = SIZES[-1][2], SIZES[-1][3]
        for _, w, k, n in SIZES:
            x -= w
            if x <= 0:
                kind, size = k, n
                break
        cls = "spot" if rng.random() < spot_share else "on_demand"
        duration = rng.expovariate(1 / mean_hours) * 3600
        out.append(Arrival(t, kind, size, "H100", cls, max(duration, 1.0), max_wait_s))
