"""What the agent knows about a node's GPUs, and the port it learns it through.

``GpuSource`` is the narrow interface: ``inventory()`` (driver and CUDA versions, the GPUs the
node has) and ``sample()`` (per-GPU telemetry now). ``nvml.NvmlSource`` reads a real node;
``RecordedSource`` replays an inventory and telemetry recorded as JSON in this package
(``recorded/*.json``) and says ``simulated`` in everything it reports.

A value the source could not read is ``None`` here, never a crash and never a made-up number;
how a ``None`` goes on the wire is ``wire.py``'s business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

RECORDED = ("h100", "h200", "h100-ecc", "h100-lost-gpu")
"""The recorded sources shipped with the agent (``--recorded NAME``)."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as the node sees it. Memory in MiB; ``nvlink_active`` counts active links
    (``None``: NVLink not readable, e.g. a PCIe card)."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    serial: str | None = None
    pci_bus_id: str | None = None
    nvlink_active: int | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """The node's GPUs, with the driver (``550.54.15``) and CUDA (``12.4``) versions."""

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[GpuInfo, ...]
    simulated: bool


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU's telemetry at one moment. Units: percent, MiB, °C, W, MHz. ECC counts are the
    volatile ones (since the driver loaded) and the aggregate ones (lifetime). ``throttle``
    holds reason names (``thermal``, ``power``, ``hw_slowdown``); ``xid`` the XID error codes
    seen since the previous sample. ``None``: the GPU did not let us read it."""

    index: int
    utilization_pct: float | None = None
    memory_used_mib: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    sm_clock_mhz: int | None = None
    ecc_correctable: int | None = None
    ecc_uncorrectable: int | None = None
    ecc_correctable_aggregate: int | None = None
    ecc_uncorrectable_aggregate: int | None = None
    retired_pages: int | None = None
    remap_failed: bool | None = None
    throttle: tuple[str, ...] = ()
    xid: tuple[int, ...] = field(default=())


class GpuSource(Protocol):
    """Where the agent reads GPUs from."""

    @property
    def simulated(self) -> bool:
        """True when what this source reports is not read from real GPUs."""
        ...

    def inventory(self) -> Inventory:
        """The node's driver, CUDA version and GPUs now."""
        ...

    def sample(self) -> list[GpuSample]:
        """Telemetry for each GPU the inventory lists."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML's handle, its event set)."""
        ...


class RecordedSource:
    """A recorded node: ``RecordedSource("h100-ecc")`` replays ``recorded/h100-ecc.json``.

    The file holds ``inventory`` and ``frames`` (each a list of per-GPU samples); ``sample()``
    returns the frames in turn, starting again after the last. Everything it reports carries
    ``simulated: true``."""

    simulated = True

    def __init__(self, name: str) -> None:
        if name not in RECORDED:
            raise ValueError(f"no recorded GPU source {name!r}; known: {', '.join(RECORDED)}")
        self.name = name
        raw = json.loads(
            resources.files("neocloud.agent").joinpath(f"recorded/{name}.json").read_text()
        )
        inv = raw["inventory"]
        self._inventory = Inventory(
            driver_version=inv["driver_version"],
            cuda_version=inv["cuda_version"],
            gpus=tuple(GpuInfo(**gpu) for gpu in inv["gpus"]),
            simulated=True,
        )
        self._frames = [[_sample(s) for s in frame] for frame in raw["frames"]]
        if not self._frames:
            raise ValueError(f"recorded GPU source {name!r} has no telemetry frames")
        self._next = 0

    def inventory(self) -> Inventory:
        return self._inventory

    def sample(self) -> list[GpuSample]:
        frame = self._frames[self._next % len(self._frames)]
        self._next += 1
        return list(frame)

    def close(self) -> None:
        return None


def _sample(raw: dict[str, Any]) -> GpuSample:
    values = dict(raw)
    values["throttle"] = tuple(values.get("throttle", ()))
    values["xid"] = tuple(values.get("xid", ()))
    return GpuSample(**values)


class ReopeningSource:
    """A source that may not open yet (no driver loaded, NVML library missing): until it
    opens, it reports no GPUs and says why in ``problem``, and each ``inventory()`` tries to
    open it again. The agent keeps heartbeating meanwhile, so the control plane hears "this
    node sees no GPUs, because …" rather than silence."""

    def __init__(self, opener: Callable[[], GpuSource]) -> None:
        self._opener = opener
        self._inner: GpuSource | None = None
        self.problem: str | None = None
        self._open()

    def _open(self) -> None:
        try:
            self._inner = self._opener()
            self.problem = None
        except Exception as exc:  # NVMLError, ImportError, OSError: whatever keeps NVML shut
            self.problem = f"GPU source unavailable: {type(exc).__name__}: {exc}"

    @property
    def simulated(self) -> bool:
        return self._inner.simulated if self._inner is not None else False

    def inventory(self) -> Inventory:
        if self._inner is None:
            self._open()
        if self._inner is None:
            return Inventory(driver_version=None, cuda_version=None, gpus=(), simulated=False)
        return self._inner.inventory()

    def sample(self) -> list[GpuSample]:
        return self._inner.sample() if self._inner is not None else []

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def open_source(recorded: str | None) -> GpuSource:
    """The recorded source named ``recorded``, or NVML when ``None`` (imports pynvml)."""
    if recorded is not None:
        return RecordedSource(recorded)
    from neocloud.agent.nvml import NvmlSource

    return NvmlSource()
