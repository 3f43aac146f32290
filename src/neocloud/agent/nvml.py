"""``NvmlSource``: a node's GPUs read through NVML (the ``nvidia-ml-py`` package, ``pynvml``).

Every field is read on its own and an ``NVMLError`` on one field makes that field ``None``
("not readable": a PCIe card has no NVLink, page retirement is not supported on Hopper,
which remaps rows instead), never a crash. A GPU whose handle, UUID, name or memory cannot be
read (``NVML_ERROR_GPU_IS_LOST``: it fell off the bus) is left out of the inventory, so the
control plane sees one GPU fewer than the node was registered with.

XID errors come from an NVML event set registered for critical XID events on each GPU that
supports them, drained without waiting at each sample.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from neocloud.agent.gpus import GpuInfo, GpuSample, Inventory

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024
XID_EVENTS_PER_SAMPLE = 256
"""At most this many events are drained per sample: a storm of XIDs cannot stall the agent."""

# Throttle (clock event) reason bits, as in nvml.h, and the names the agent reports them by.
THROTTLE_BITS: tuple[tuple[int, str], ...] = (
    (0x0000000000000004, "power"),  # SwPowerCap
    (0x0000000000000080, "power"),  # HwPowerBrakeSlowdown
    (0x0000000000000020, "thermal"),  # SwThermalSlowdown
    (0x0000000000000040, "thermal"),  # HwThermalSlowdown
    (0x0000000000000008, "hw_slowdown"),  # HwSlowdown
)


def throttle_names(reasons: int) -> tuple[str, ...]:
    """The reason names set in an NVML clock-event bit mask, each once, in table order."""
    names: list[str] = []
    for bit, name in THROTTLE_BITS:
        if reasons & bit and name not in names:
            names.append(name)
    return tuple(names)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource:
    """The GPUs of this machine, through NVML. ``nvml`` is the ``pynvml`` module (imported
    here when not given; tests hand in a double). Raises ``pynvml.NVMLError`` when NVML itself
    cannot start (no driver, no library)."""

    simulated = False

    def __init__(self, nvml: Any = None) -> None:
        self._nvml: Any = nvml if nvml is not None else importlib.import_module("pynvml")
        self._nvml.nvmlInit()
        self._events: Any = self._open_events()

    # ------------------------------------------------------------------------------- reading

    def _read(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or ``None`` when NVML answers with an error for this one field."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            log.debug("NVML field not readable: %s", exc)
            return None

    def _handles(self) -> list[tuple[int, Any]]:
        nv = self._nvml
        count = self._read(nv.nvmlDeviceGetCount) or 0
        handles: list[tuple[int, Any]] = []
        for index in range(count):
            handle = self._read(nv.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                log.warning("GPU %d: no NVML handle (lost or unreadable); left out", index)
                continue
            handles.append((index, handle))
        return handles

    def inventory(self) -> Inventory:
        nv = self._nvml
        driver = self._read(nv.nvmlSystemGetDriverVersion)
        cuda = self._read(nv.nvmlSystemGetCudaDriverVersion)
        gpus = []
        for index, handle in self._handles():
            gpu = self._gpu(index, handle)
            if gpu is None:
                log.warning("GPU %d: UUID, name or memory not readable (lost?); left out", index)
            else:
                gpus.append(gpu)
        return Inventory(
            driver_version=_text(driver) if driver is not None else None,
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda is not None else None,
            gpus=tuple(gpus),
            simulated=False,
        )

    def _gpu(self, index: int, handle: Any) -> GpuInfo | None:
        nv = self._nvml
        uuid = self._read(lambda: nv.nvmlDeviceGetUUID(handle))
        name = self._read(lambda: nv.nvmlDeviceGetName(handle))
        memory = self._read(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        if uuid is None or name is None or memory is None:
            return None
        serial = self._read(lambda: nv.nvmlDeviceGetSerial(handle))
        pci = self._read(lambda: nv.nvmlDeviceGetPciInfo(handle))
        return GpuInfo(
            index=index,
            uuid=_text(uuid),
            name=_text(name),
            memory_total_mib=int(memory.total) // MIB,
            serial=_text(serial) if serial is not None else None,
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            nvlink_active=self._nvlink_active(handle),
        )

    def _nvlink_active(self, handle: Any) -> int | None:
        """Active NVLink links; ``None`` when no link's state is readable."""
        nv = self._nvml
        links = int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))
        enabled = int(getattr(nv, "NVML_FEATURE_ENABLED", 1))
        states = [self._read(nv.nvmlDeviceGetNvLinkState, handle, k) for k in range(links)]
        readable = [s for s in states if s is not None]
        return sum(1 for s in readable if s == enabled) if readable else None

    def sample(self) -> list[GpuSample]:
        xids = self._drain_xids()
        return [self._sample(i, h, tuple(xids.get(i, ()))) for i, h in self._handles()]

    def _sample(self, index: int, handle: Any, xid: tuple[int, ...]) -> GpuSample:
        nv = self._nvml
        util = self._read(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        memory = self._read(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        temp = self._read(lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
        power_mw = self._read(lambda: nv.nvmlDeviceGetPowerUsage(handle))
        clock = self._read(lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))
        remap = self._read(lambda: nv.nvmlDeviceGetRemappedRows(handle))
        reasons = self._read(lambda: self._clock_event_reasons(handle))
        return GpuSample(
            index=index,
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_mib=int(memory.used) // MIB if memory is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            sm_clock_mhz=int(clock) if clock is not None else None,
            ecc_correctable=self._ecc(handle, uncorrected=False, aggregate=False),
            ecc_uncorrectable=self._ecc(handle, uncorrected=True, aggregate=False),
            ecc_correctable_aggregate=self._ecc(handle, uncorrected=False, aggregate=True),
            ecc_uncorrectable_aggregate=self._ecc(handle, uncorrected=True, aggregate=True),
            retired_pages=self._retired_pages(handle),
            remap_failed=bool(remap[3]) if remap is not None else None,
            throttle=throttle_names(int(reasons)) if reasons is not None else (),
            xid=xid,
        )

    def _clock_event_reasons(self, handle: Any) -> int:
        nv = self._nvml
        # Newer drivers call them clock event reasons; older bindings only have the old name.
        getter = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if getter is None:
            getter = nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(getter(handle))

    def _ecc(self, handle: Any, *, uncorrected: bool, aggregate: bool) -> int | None:
        nv = self._nvml
        kind = (
            nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
            if uncorrected
            else nv.NVML_MEMORY_ERROR_TYPE_CORRECTED
        )
        counter = nv.NVML_AGGREGATE_ECC if aggregate else nv.NVML_VOLATILE_ECC
        value = self._read(lambda: nv.nvmlDeviceGetTotalEccErrors(handle, kind, counter))
        return int(value) if value is not None else None

    def _retired_pages(self, handle: Any) -> int | None:
        """Pages retired for either cause (multiple single-bit, double-bit ECC errors)."""
        nv = self._nvml
        total = 0
        for cause in (0, 1):  # NVML_PAGE_RETIREMENT_CAUSE_{MULTIPLE_SINGLE_BIT,DOUBLE_BIT}_…
            pages = self._read(nv.nvmlDeviceGetRetiredPages, handle, cause)
            if pages is None:
                return None
            total += len(pages)
        return total

    # -------------------------------------------------------------------------------- events

    def _open_events(self) -> Any:
        """An event set with critical XID events registered on each GPU that supports them;
        ``None`` when NVML offers no event set here."""
        nv = self._nvml
        xid_mask = int(getattr(nv, "nvmlEventTypeXidCriticalError", 0x8))
        events = self._read(nv.nvmlEventSetCreate)
        if events is None:
            return None
        for index, handle in self._handles():
            supported = self._read(nv.nvmlDeviceGetSupportedEventTypes, handle)
            if supported is None or not int(supported) & xid_mask:
                log.info("GPU %d: XID events not supported; XIDs will not be reported", index)
                continue
            self._read(nv.nvmlDeviceRegisterEvents, handle, xid_mask, events)
        return events

    def _drain_xids(self) -> dict[int, list[int]]:
        """XID codes per GPU index from the events pending now (waits 0 ms)."""
        nv = self._nvml
        xids: dict[int, list[int]] = {}
        if self._events is None:
            return xids
        xid_mask = int(getattr(nv, "nvmlEventTypeXidCriticalError", 0x8))
        for _ in range(XID_EVENTS_PER_SAMPLE):
            # NVML answers NVML_ERROR_TIMEOUT when nothing is pending: the normal way out.
            data = self._read(lambda: nv.nvmlEventSetWait(self._events, 0))
            if data is None:
                break
            if not int(data.eventType) & xid_mask:
                continue
            index = self._read(nv.nvmlDeviceGetIndex, data.device)
            if index is not None:
                xids.setdefault(int(index), []).append(int(data.eventData))
        return xids

    def close(self) -> None:
        nv = self._nvml
        if self._events is not None:
            self._read(lambda: nv.nvmlEventSetFree(self._events))
            self._events = None
        self._read(nv.nvmlShutdown)
