"""A test double for the ``pynvml`` module (nvidia-ml-py): this machine has no NVIDIA GPU and
no NVML library, so the tests hand ``NvmlSource`` a module with the same names that answers
from a table of GPUs. It imitates only what the agent calls, with NVML's own error codes and
constants; a field set to an ``NVMLError`` raises it, as the real library does for a field
that is not supported or a GPU that is lost."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_INVALID_ARGUMENT = 2


MESSAGES = {
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return MESSAGES.get(self.value, f"NVML error {self.value}")


def not_supported() -> NVMLError:
    return NVMLError(NVML_ERROR_NOT_SUPPORTED)


def lost() -> NVMLError:
    return NVMLError(NVML_ERROR_GPU_IS_LOST)


@dataclass
class FakeGpu:
    """One GPU's answers; an ``NVMLError`` as a value is raised when that field is read."""

    uuid: Any = "GPU-00000000-0000-4000-8000-000000000000"
    name: Any = "NVIDIA H100 80GB HBM3"
    serial: Any = "SIM000000000"
    memory_total: Any = 81559 * 1024 * 1024
    memory_used: int = 4 * 1024 * 1024
    bus_id: Any = b"00000000:18:00.0"
    nvlink: Any = field(default_factory=lambda: [1] * 18)
    utilization: Any = 37
    temperature: Any = 41
    power_mw: Any = 123456
    sm_clock: Any = 1980
    ecc: Any = field(default_factory=lambda: {(0, 0): 2, (1, 0): 0, (0, 1): 5, (1, 1): 0})
    retired: Any = field(default_factory=lambda: {0: [], 1: []})
    remapped: Any = (0, 0, 0, 0)
    reasons: Any = 0
    events: Any = 0x8  # supported event types: critical XID
    handle: Any = None  # an NVMLError here: no handle for this GPU at all


@dataclass
class Struct:
    total: int = 0
    used: int = 0
    gpu: int = 0
    busId: Any = b""  # noqa: N815 - NVML's field name
    device: Any = None
    eventType: int = 0  # noqa: N815
    eventData: int = 0  # noqa: N815


def _value(value: Any) -> Any:
    if isinstance(value, NVMLError):
        raise value
    return value


def make(gpus: list[FakeGpu], *, driver: Any = "550.54.15", cuda: Any = 12040,
         init_error: NVMLError | None = None) -> types.ModuleType:  # fmt: skip
    """A ``pynvml`` double over ``gpus``; ``module.pending_xids`` is a list of (index, xid)
    events waiting in the event set; ``module.calls`` counts init/shutdown."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError  # type: ignore[attr-defined]
    consts = {
        "NVML_TEMPERATURE_GPU": 0, "NVML_CLOCK_SM": 1, "NVML_VOLATILE_ECC": 0,
        "NVML_AGGREGATE_ECC": 1, "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1, "NVML_NVLINK_MAX_LINKS": 18,
        "NVML_FEATURE_ENABLED": 1, "nvmlEventTypeXidCriticalError": 0x8,
    }  # fmt: skip
    for key, value in consts.items():
        setattr(nv, key, value)
    state: dict[str, Any] = {"pending_xids": [], "calls": {"init": 0, "shutdown": 0}}
    nv.pending_xids = state["pending_xids"]  # type: ignore[attr-defined]
    nv.calls = state["calls"]  # type: ignore[attr-defined]
    registered: set[int] = set()

    def gpu(handle: int) -> FakeGpu:
        return gpus[handle]

    def init() -> None:
        if init_error is not None:
            raise init_error
        state["calls"]["init"] += 1

    def shutdown() -> None:
        state["calls"]["shutdown"] += 1

    def handle_by_index(index: int) -> int:
        _value(gpus[index].handle)
        return index

    def nvlink_state(handle: int, link: int) -> int:
        links = _value(gpu(handle).nvlink)
        if link >= len(links):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return int(_value(links[link]))

    def event_wait(event_set: object, timeout_ms: int) -> Struct:
        pending = state["pending_xids"]
        while pending:
            index, xid = pending.pop(0)
            if index in registered:
                return Struct(device=index, eventType=0x8, eventData=xid)
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def register(handle: int, mask: int, event_set: object) -> None:
        registered.add(handle)

    functions = {
        "nvmlInit": init,
        "nvmlShutdown": shutdown,
        "nvmlSystemGetDriverVersion": lambda: _value(driver),
        "nvmlSystemGetCudaDriverVersion": lambda: _value(cuda),
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlDeviceGetIndex": lambda h: h,
        "nvmlDeviceGetUUID": lambda h: _value(gpu(h).uuid),
        "nvmlDeviceGetName": lambda h: _value(gpu(h).name),
        "nvmlDeviceGetSerial": lambda h: _value(gpu(h).serial),
        "nvmlDeviceGetMemoryInfo": lambda h: Struct(
            total=_value(gpu(h).memory_total), used=gpu(h).memory_used
        ),
        "nvmlDeviceGetPciInfo": lambda h: Struct(busId=_value(gpu(h).bus_id)),
        "nvmlDeviceGetNvLinkState": nvlink_state,
        "nvmlDeviceGetUtilizationRates": lambda h: Struct(gpu=_value(gpu(h).utilization)),
        "nvmlDeviceGetTemperature": lambda h, sensor: _value(gpu(h).temperature),
        "nvmlDeviceGetPowerUsage": lambda h: _value(gpu(h).power_mw),
        "nvmlDeviceGetClockInfo": lambda h, kind: _value(gpu(h).sm_clock),
        "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: _value(
            _value(gpu(h).ecc)[(kind, counter)]
        ),
        "nvmlDeviceGetRetiredPages": lambda h, cause: _value(_value(gpu(h).retired)[cause]),
        "nvmlDeviceGetRemappedRows": lambda h: _value(gpu(h).remapped),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: _value(gpu(h).reasons),
        "nvmlDeviceGetSupportedEventTypes": lambda h: _value(gpu(h).events),
        "nvmlDeviceRegisterEvents": register,
        "nvmlEventSetCreate": lambda: object(),
        "nvmlEventSetWait": event_wait,
        "nvmlEventSetFree": lambda event_set: None,
    }
    for name, fn in functions.items():
        setattr(nv, name, fn)
    return nv
