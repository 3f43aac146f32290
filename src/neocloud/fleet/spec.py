"""Fleet spec files: a YAML document declaring topology levels, node templates and sites.

```yaml
version: 1
levels: [region, zone, fabric, block, rack]      # the node is the implied last level
templates:
  h100-8x: {gpu_model: H100, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30,
            capex: "250000.00", book_life_years: 5, labels: {pool: training}}
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:                                      # generated: blocks x racks x nodes
      - {name: us-east-1a-ib01, template: h100-8x, blocks: 8, racks_per_block: 8,
         nodes_per_rack: 4, in_service: 2026-01-15, bmc: "https://{hostname}.bmc.example"}
    nodes:                                        # listed one by one
      - {hostname: gpu-0001, template: h100-8x,
         topology: {fabric: us-east-1a-ib01, block: us-east-1a-ib01-b01, rack: r-special},
         driver: ssh,                             # a real server (default: sim)
         driver_config: {address: 10.0.0.5, user: root, private_key_file: keys/op_key}}
```

A template or an explicit node may name its ``driver`` and ``driver_config`` (a node's settings
override its template's, key by key), checked as ``POST /api/v1/nodes`` checks them
(``fleet.node_drivers``). Generated fabrics hold simulated nodes only: a real server has an
address of its own, so it is listed under ``nodes``. ``private_key_file`` and
``bmc_password_file`` are read, relative to the spec file, when the file is loaded (``neocloud
fleet import`` inlines them before sending); they are sealed at import and never stored in
clear. A ``redfish`` node's ``bmc.endpoint`` serves as its ``bmc_url`` when it names none.

Generated names derive from their parents (block ``<fabric>-b03``, rack ``<block>-r02``, host
``<rack>-n01``), so a name is unique within its level across the fleet. Errors are
``ValidationFailed`` whose ``param`` is the dotted path of the field and whose message names the
line of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from neocloud.fleet.catalog import find_gpu_model, resolve_gpu_model
from neocloud.fleet.node_drivers import DriverSettings, SpecDriverConfig, merge_driver
from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.money import to_decimal
from neocloud.web.fields import AMOUNT_MAX, AMOUNT_PLACES, Clean, Currency

DEFAULT_LEVELS: tuple[str, ...] = ("region", "zone", "fabric", "block", "rack")
MAX_NODES_PER_FILE = 100_000
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HOSTNAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
Name = Field(pattern=NAME_PATTERN)
MAX_LABELS = 64
LabelKey = Annotated[Clean, Field(min_length=1, max_length=63)]
LabelValue = Annotated[Clean, Field(max_length=253)]
Labels = dict[LabelKey, LabelValue]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


DriverName = Literal["sim", "ssh", "redfish"]
SIM = DriverSettings("sim")


class NodeTemplate(_Strict):
    gpu_model: str
    gpu_count: int = Field(ge=1, le=16)
    vcpus: int = Field(ge=1, le=4096)
    ram_gib: int = Field(ge=1, le=1 << 20)
    nvme_gib: int | None = Field(None, ge=0, le=1 << 24)
    nvme_tib: Decimal | None = Field(None, ge=0, le=16384)
    capex: Decimal | None = Field(
        None, ge=0, le=AMOUNT_MAX, decimal_places=AMOUNT_PLACES, description="purchase price"
    )
    currency: Currency = "USD"
    book_life_years: int | None = Field(None, ge=1, le=15)
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS)
    driver: DriverName | None = None
    driver_config: SpecDriverConfig | None = None

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        model = find_gpu_model(value)
        if model is None:
            resolve_gpu_model(value)  # raises with the list of known models
            raise AssertionError("unreachable")
        return model.id

    @field_validator("capex", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        return None if value is None else to_decimal(value)

    @property
    def nvme(self) -> int:
        """NVMe capacity in GiB."""
        if self.nvme_gib is not None:
            return self.nvme_gib
        if self.nvme_tib is not None:
            return int(self.nvme_tib * 1024)
        return 0


class BmcSpec(_Strict):
    """Where the node's baseboard controller answers; credentials live in a secret store."""

    endpoint: Clean = Field(min_length=1, max_length=512)
    vendor: Clean | None = Field(None, max_length=64)


class FabricSpec(_Strict):
    name: str = Name
    template: str
    blocks: int = Field(ge=1, le=4096)
    racks_per_block: int = Field(ge=1, le=256)
    nodes_per_rack: int = Field(ge=1, le=72)
    node_count: int | None = Field(
        None, ge=1, le=MAX_NODES_PER_FILE, description="fill racks in order up to this"
    )
    in_service: date | None = None
    bmc: Clean | None = Field(None, max_length=512, description="endpoint with {hostname}")
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS)

    @property
    def capacity(self) -> int:
        return self.blocks * self.racks_per_block * self.nodes_per_rack

    @property
    def nodes(self) -> int:
        return self.node_count if self.node_count is not None else self.capacity


class ExplicitNode(_Strict):
    hostname: str = Field(pattern=HOSTNAME_PATTERN)
    template: str
    topology: dict[LabelKey, LabelValue] = Field(max_length=16)
    in_service: date | None = None
    bmc: BmcSpec | None = None
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS)
    driver: DriverName | None = None
    driver_config: SpecDriverConfig | None = None


class SiteSpec(_Strict):
    region: str = Name
    zone: str = Name
    fabrics: list[FabricSpec] = Field(default_factory=list)
    nodes: list[ExplicitNode] = Field(default_factory=list)


class FleetSpec(_Strict):
    version: Literal[1] = 1
    levels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LEVELS), min_length=2, max_length=8
    )
    templates: dict[str, NodeTemplate] = Field(min_length=1)
    sites: list[SiteSpec] = Field(min_length=1)
    # hostname -> checked driver settings of each node listed one by one that is not simulated
    _drivers: dict[str, DriverSettings] = PrivateAttr(default_factory=dict)

    def driver_of(self, hostname: str) -> DriverSettings:
        """The checked driver settings of a node (``sim`` unless the spec says otherwise)."""
        return self._drivers.get(hostname, SIM)

    def set_driver(self, hostname: str, settings: DriverSettings) -> None:
        self._drivers[hostname] = settings

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        if value[:2] != ["region", "zone"]:
            raise ValueError("levels must start with region, zone (the site's levels)")
        if len(set(value)) != len(value):
            raise ValueError("levels must be distinct")
        for level in value:
            if not level.isidentifier() or level != level.lower() or level == "node":
                raise ValueError(f"level {level!r} must be a lowercase identifier, not 'node'")
        return value

    @property
    def node_count(self) -> int:
        return sum(f.nodes for s in self.sites for f in s.fabrics) + sum(
            len(s.nodes) for s in self.sites
        )


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node the spec declares, ready to become a row."""

    hostname: str
    template: NodeTemplate
    topology: dict[str, str]
    in_service: date | None
    bmc: dict[str, Any] | None
    labels: dict[str, str]
    driver: DriverSettings = SIM


# --- loading with line numbers ----------------------------------------------------------------


def load_spec_file(path: Path | str) -> FleetSpec:
    """Read and check a spec file (``private_key_file`` is read relative to it)."""
    path = Path(path)
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path), base_dir=path.parent)


def parse_spec(text: str, *, source: str = "<spec>", base_dir: Path | None = None) -> FleetSpec:
    """Parse and check a spec; a problem raises ``ValidationFailed`` naming field and line.

    ``base_dir``: where ``private_key_file`` paths are read from; without it (a spec sent
    over the API) such a path is refused."""
    loader = None
    try:
        # The reader refuses control characters as it is built: inside the try, a 422 not a 500.
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationFailed(
            f"{source}: not valid YAML{line}: {problem}", code="invalid_yaml"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ValidationFailed(f"{source}: a fleet spec is a YAML mapping", code="invalid_spec")
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        raise _located(source, root, loc, first["msg"], "invalid_spec") from None
    except ValidationFailed as exc:  # raised by a validator (unknown GPU model)
        raise _located(source, root, ("templates",), exc.message, exc.code) from None
    problem = check_spec(spec)
    if problem is not None:
        loc, message = problem
        raise _located(source, root, loc, message, "invalid_spec")
    _check_drivers(spec, source, root, base_dir)
    return spec


def _check_drivers(spec: FleetSpec, source: str, root: Any, base_dir: Path | None) -> None:
    """Check the driver settings of every node listed one by one, and keep them on ``spec``."""
    for i, site in enumerate(spec.sites):
        for k, node in enumerate(site.nodes):
            at: tuple[Any, ...] = ("sites", i, "nodes", k)
            template = spec.templates[node.template]
            parts = (template.driver_config, node.driver_config)
            if node.driver is None and template.driver is None and parts == (None, None):
                continue
            driver = node.driver or template.driver or "sim"
            try:
                settings = merge_driver(
                    driver,
                    parts,
                    base_dir=base_dir,
                    at=f"{dotted(at)}.",
                    bmc_endpoint=node.bmc.endpoint if node.bmc else None,
                )
            except ValidationFailed as exc:
                line = _line_of(root, (*at, "driver_config") if node.driver_config else at)
                raise ValidationFailed(
                    f"{source}: {exc.message}" + (f" (line {line})" if line else ""),
                    code=exc.code,
                    param=exc.param,
                    details={"line": line} if line else None,
                ) from None
            if settings.driver != "sim":
                spec.set_driver(node.hostname, settings)


def _located(source: str, root: Any, loc: tuple[Any, ...], msg: str, code: str) -> ValidationFailed:
    param = dotted(loc)
    line = _line_of(root, loc)
    where = f" (line {line})" if line else ""
    return ValidationFailed(
        f"{source}: {param}: {msg}{where}",
        code=code,
        param=param or None,
        details={"line": line} if line else None,
    )


def _line_of(root: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest YAML node on ``loc`` that the document has."""
    node = root
    if node is None:
        return None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
    line: int = node.start_mark.line + 1
    return line


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- semantic checks ------------------------------------------------------------------------


def check_spec(spec: FleetSpec) -> tuple[tuple[Any, ...], str] | None:
    """The first problem the schema cannot see (references, duplicates, sizes), or ``None``."""
    total = spec.node_count
    if total > MAX_NODES_PER_FILE:
        return (
            ("sites",),
            f"the spec declares {total} nodes; one file may hold at most "
            f"{MAX_NODES_PER_FILE} (split it into several imports)",
        )
    custom = list(spec.levels) != list(DEFAULT_LEVELS)
    parents: dict[tuple[str, str], tuple[str, ...]] = {}
    zones: dict[str, int] = {}
    for i, site in enumerate(spec.sites):
        if site.zone in zones:
            return (
                "sites",
                i,
                "zone",
            ), f"duplicate zone {site.zone!r} (also sites[{zones[site.zone]}])"
        zones[site.zone] = i
        problem = _claim(parents, "zone", site.zone, (site.region,), ("sites", i, "zone"))
        if problem:
            return problem
        for j, fabric in enumerate(site.fabrics):
            at = ("sites", i, "fabrics", j)
            if custom:
                return (
                    at,
                    "generated fabrics need the default levels "
                    f"{list(DEFAULT_LEVELS)}; with custom levels list nodes explicitly",
                )
            problem = _check_fabric(spec, site, fabric, at, parents)
            if problem:
                return problem
        for k, node in enumerate(site.nodes):
            at = ("sites", i, "nodes", k)
            if node.template not in spec.templates:
                return (*at, "template"), f"unknown template {node.template!r}"
            problem = _check_explicit(spec, site, node, at, parents)
            if problem:
                return problem
    return _check_hostnames(spec)


def _claim(
    parents: dict[tuple[str, str], tuple[str, ...]],
    level: str,
    name: str,
    path: tuple[str, ...],
    at: tuple[Any, ...],
) -> tuple[tuple[Any, ...], str] | None:
    """Record that ``name`` at ``level`` sits under ``path``; a second parent is a duplicate."""
    known = parents.setdefault((level, name), path)
    if known != path:
        return at, f"duplicate {level} name {name!r}: already used under {'/'.join(known)}"
    return None


def _check_fabric(
    spec: FleetSpec,
    site: SiteSpec,
    fabric: FabricSpec,
    at: tuple[Any, ...],
    parents: dict[tuple[str, str], tuple[str, ...]],
) -> tuple[tuple[Any, ...], str] | None:
    if fabric.template not in spec.templates:
        return (*at, "template"), f"unknown template {fabric.template!r}"
    if spec.templates[fabric.template].driver not in (None, "sim"):
        return (
            (*at, "template"),
            "generated fabrics hold simulated nodes; list real servers one by one under "
            "nodes (each has its own address)",
        )
    if fabric.node_count is not None and fabric.node_count > fabric.capacity:
        return (
            (*at, "node_count"),
            f"node_count {fabric.node_count} exceeds the fabric's "
            f"capacity of {fabric.capacity} (blocks x racks_per_block x nodes_per_rack)",
        )
    if (("fabric", fabric.name)) in parents:
        return (*at, "name"), f"duplicate fabric name {fabric.name!r}"
    parents[("fabric", fabric.name)] = (site.region, site.zone)
    for b in range(1, fabric.blocks + 1):
        block = f"{fabric.name}-b{b:02d}"
        problem = _claim(parents, "block", block, (site.region, site.zone, fabric.name), at)
        if problem:
            return problem
        for r in range(1, fabric.racks_per_block + 1):
            path = (site.region, site.zone, fabric.name, block)
            problem = _claim(parents, "rack", f"{block}-r{r:02d}", path, at)
            if problem:
                return problem
    if fabric.bmc is not None and "{hostname}" not in fabric.bmc:
        return (*at, "bmc"), "the bmc endpoint pattern must contain {hostname}"
    return None


def _check_explicit(
    spec: FleetSpec,
    site: SiteSpec,
    node: ExplicitNode,
    at: tuple[Any, ...],
    parents: dict[tuple[str, str], tuple[str, ...]],
) -> tuple[tuple[Any, ...], str] | None:
    lower = spec.levels[2:]
    if set(node.topology) != set(lower):
        return (*at, "topology"), f"topology must name exactly the levels {lower}"
    path: tuple[str, ...] = (site.region, site.zone)
    for level in lower:
        name = node.topology[level]
        if not _valid_name(name):
            return (*at, "topology", level), f"{name!r} is not a valid {level} name"
        problem = _claim(parents, level, name, path, (*at, "topology", level))
        if problem:
            return problem
        path = (*path, name)
    return None


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(NAME_PATTERN, name) is not None


def _check_hostnames(spec: FleetSpec) -> tuple[tuple[Any, ...], str] | None:
    seen: set[str] = set()
    for i, site in enumerate(spec.sites):
        for j, fabric in enumerate(site.fabrics):
            for host in _fabric_hostnames(fabric):
                if host[0] in seen:
                    return ("sites", i, "fabrics", j, "name"), f"duplicate hostname {host[0]!r}"
                seen.add(host[0])
        for k, node in enumerate(site.nodes):
            if node.hostname in seen:
                return ("sites", i, "nodes", k, "hostname"), f"duplicate hostname {node.hostname!r}"
            seen.add(node.hostname)
    return None


def _fabric_hostnames(fabric: FabricSpec) -> Iterator[tuple[str, str, str]]:
    """(hostname, block, rack) of each node of a generated fabric, in order."""
    count = 0
    for b in range(1, fabric.blocks + 1):
        block = f"{fabric.name}-b{b:02d}"
        for r in range(1, fabric.racks_per_block + 1):
            rack = f"{block}-r{r:02d}"
            for n in range(1, fabric.nodes_per_rack + 1):
                if count >= fabric.nodes:
                    return
                count += 1
                yield f"{rack}-n{n:02d}", block, rack


def expand(spec: FleetSpec) -> Iterator[PlannedNode]:
    """Every node the spec declares, in file order."""
    for site in spec.sites:
        for fabric in site.fabrics:
            template = spec.templates[fabric.template]
            labels = {**template.labels, **fabric.labels}
            for hostname, block, rack in _fabric_hostnames(fabric):
                bmc = None
                if fabric.bmc:
                    bmc = {"endpoint": fabric.bmc.replace("{hostname}", hostname)}
                topology = {
                    "region": site.region,
                    "zone": site.zone,
                    "fabric": fabric.name,
                    "block": block,
                    "rack": rack,
                }
                yield PlannedNode(hostname, template, topology, fabric.in_service, bmc, labels)
        for node in site.nodes:
            template = spec.templates[node.template]
            topology = {"region": site.region, "zone": site.zone}
            topology.update({level: node.topology[level] for level in spec.levels[2:]})
            bmc_dict = node.bmc.model_dump(exclude_none=True) if node.bmc else None
            yield PlannedNode(
                node.hostname,
                template,
                topology,
                node.in_service,
                bmc_dict,
                {**template.labels, **node.labels},
                spec.driver_of(node.hostname),
            )


def dump_spec(spec: FleetSpec) -> str:
    data = spec.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def demo_spec() -> FleetSpec:
    """The demo fleet: 4,096 GPUs (H100, H200, L40S) over two regions."""
    return load_spec_file(Path(__file__).parent / "specs" / "demo.yaml")
