"""The passive health rules: what a node agent's heartbeat says about a node, as check results.

One table, pure (plain data in, plain data out); ``fleet.agent`` applies the results through
the fleet's health reporting, where a ``fail`` takes the node out of service (``failed``) and
compute fails or heals what ran on it. docs/agent.md shows the same table.

====================  ===============================  ==================================
check                 fail when                        warn when
====================  ===============================  ==================================
``gpu.ecc``           a GPU has an uncorrectable ECC
                      error (``ecc_uncorrectable``>0)
``gpu.remap``         a GPU failed to remap a memory
                      row (``remap_failed``)
``gpu.count``         the inventory has fewer GPUs
                      than the node was registered
                      with (a GPU fell off the bus)
``gpu.model``         an inventory GPU is not the
                      node's registered model
``gpu.throttle``                                       a GPU throttles: thermal or power
``gpu.temp``                                           a GPU is at or above 90 °C
``gpu.xid``           XID 48, 63, 64, 74, 79, 94, 95   any other XID
``agent.<name>``      the agent's own check: as sent   as sent
====================  ===============================  ==================================

Every rule answers on every heartbeat that carries what it looks at (``pass`` when nothing is
wrong), so a warning clears when its cause does; rules on the inventory answer only when the
heartbeat carries an inventory. A failed node stays failed until an operator repairs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from neocloud.fleet.catalog import CATALOG, GpuModel
from neocloud.fleet.domain import CheckStatus

TEMPERATURE_WARN_C = 90.0
THROTTLE_WARN = frozenset({"thermal", "power", "hw_thermal", "sw_thermal", "hw_power_brake"})
# XIDs that mean the GPU or its memory cannot be trusted with a tenant's work; from NVIDIA's
# "XID Errors" catalog (https://docs.nvidia.com/deploy/xid-errors/index.html): 48 double-bit
# ECC error, 63/64 ECC page retirement or row remapping event/failure, 74 NVLink error,
# 79 GPU has fallen off the bus, 94/95 contained/uncontained ECC error. Any other XID (13, 31,
# 43: usually an application's fault) is a warning an operator should see.
XID_FATAL = frozenset({48, 63, 64, 74, 79, 94, 95})


@dataclass(frozen=True)
class GpuSample:
    """One GPU's telemetry, as the rules need it."""

    index: int
    ecc_uncorrectable: int = 0
    remap_failed: bool = False
    temperature_c: float = 0.0
    throttle: tuple[str, ...] = ()
    xid: tuple[int, ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    status: CheckStatus
    message: str | None = None


@dataclass(frozen=True)
class AgentCheck:
    name: str
    status: str  # pass | warn | fail
    message: str | None = None


def _gpus(indices: Sequence[int]) -> str:
    return ", ".join(f"gpu {i}" for i in sorted(indices))


def _family(model: GpuModel) -> str:
    """The token NVML's product name carries for a catalog model: 'H100' for H100-SXM-80GB."""
    return (model.aliases[0] if model.aliases else model.id.split("-")[0]).upper()


_TOKENS = re.compile(r"[A-Za-z0-9]+")


def model_matches(nvml_name: str, model: GpuModel) -> bool:
    """Whether NVML's product name ('NVIDIA H100 80GB HBM3') is the catalog ``model``: its
    family token is one of the name's words, and a PCIe card is not an SXM model."""
    words = {w.upper() for w in _TOKENS.findall(nvml_name)}
    if _family(model) not in words and not any(w.startswith(_family(model)) for w in words):
        return False
    return not ("PCIE" in words and "SXM" in model.id.upper())


def telemetry_rules(gpus: Sequence[GpuSample]) -> list[Rule]:
    """The rules on telemetry; nothing when the heartbeat carried none."""
    if not gpus:
        return []
    out: list[Rule] = []
    ecc = [g.index for g in gpus if g.ecc_uncorrectable > 0]
    out.append(
        Rule("gpu.ecc", CheckStatus.FAIL, f"{_gpus(ecc)}: uncorrectable ECC errors")
        if ecc
        else Rule("gpu.ecc", CheckStatus.PASS)
    )
    remap = [g.index for g in gpus if g.remap_failed]
    out.append(
        Rule("gpu.remap", CheckStatus.FAIL, f"{_gpus(remap)}: memory row remapping failed")
        if remap
        else Rule("gpu.remap", CheckStatus.PASS)
    )
    throttled = {g.index: sorted(set(g.throttle) & THROTTLE_WARN) for g in gpus}
    throttled = {i: r for i, r in throttled.items() if r}
    out.append(
        Rule(
            "gpu.throttle",
            CheckStatus.WARN,
            "; ".join(f"gpu {i}: throttled ({', '.join(r)})" for i, r in sorted(throttled.items())),
        )
        if throttled
        else Rule("gpu.throttle", CheckStatus.PASS)
    )
    hot = [g for g in gpus if g.temperature_c >= TEMPERATURE_WARN_C]
    out.append(
        Rule(
            "gpu.temp",
            CheckStatus.WARN,
            "; ".join(f"gpu {g.index}: {g.temperature_c:.0f} °C" for g in hot)
            + f" (warn at {TEMPERATURE_WARN_C:.0f} °C)",
        )
        if hot
        else Rule("gpu.temp", CheckStatus.PASS)
    )
    fatal = {g.index: sorted(set(g.xid) & XID_FATAL) for g in gpus}
    fatal = {i: x for i, x in fatal.items() if x}
    other = {g.index: sorted(set(g.xid) - XID_FATAL) for g in gpus}
    other = {i: x for i, x in other.items() if x}

    def xids(found: dict[int, list[int]]) -> str:
        return "; ".join(f"gpu {i}: XID {', '.join(map(str, x))}" for i, x in sorted(found.items()))

    if fatal:
        out.append(Rule("gpu.xid", CheckStatus.FAIL, xids(fatal)))
    elif other:
        out.append(Rule("gpu.xid", CheckStatus.WARN, xids(other)))
    else:
        out.append(Rule("gpu.xid", CheckStatus.PASS))
    return out


def inventory_rules(*, gpu_names: Sequence[str], gpu_count: int, gpu_model: str) -> list[Rule]:
    """The rules on an inventory: as many GPUs as registered, all of the registered model."""
    out: list[Rule] = []
    found = len(gpu_names)
    out.append(
        Rule(
            "gpu.count",
            CheckStatus.FAIL,
            f"{found} of {gpu_count} GPUs found: a GPU fell off the bus or is missing",
        )
        if found < gpu_count
        else Rule("gpu.count", CheckStatus.PASS)
    )
    model = next((m for m in CATALOG if m.id == gpu_model), None)
    if model is not None:
        wrong = sorted({n for n in gpu_names if not model_matches(n, model)})
        out.append(
            Rule(
                "gpu.model",
                CheckStatus.FAIL,
                f"found {', '.join(wrong)}; the node is registered as {model.id}",
            )
            if wrong
            else Rule("gpu.model", CheckStatus.PASS)
        )
    return out


def agent_rules(checks: Sequence[AgentCheck]) -> list[Rule]:
    """A check result the agent ran itself maps as given (its name prefixed ``agent.``)."""
    return [Rule(f"agent.{c.name}", CheckStatus(c.status), c.message) for c in checks]


def evaluate(
    *,
    gpus: Sequence[GpuSample],
    inventory_names: Sequence[str] | None,
    gpu_count: int,
    gpu_model: str,
    checks: Sequence[AgentCheck] = (),
) -> list[Rule]:
    """Every rule's result for one heartbeat (``inventory_names`` None: no inventory sent)."""
    out = telemetry_rules(gpus)
    if inventory_names is not None:
        out += inventory_rules(gpu_names=inventory_names, gpu_count=gpu_count, gpu_model=gpu_model)
    return out + agent_rules(checks)
