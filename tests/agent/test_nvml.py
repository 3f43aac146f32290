"""``NvmlSource`` against a ``pynvml`` test double (``fake_pynvml``): this machine has no GPU,
so what is tested is how the agent reads NVML's answers and errors, field by field."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from neocloud.agent.gpus import ReopeningSource, open_source
from neocloud.agent.loop import Agent
from neocloud.agent.nvml import NvmlSource, throttle_names
from neocloud.agent.wire import CheckResult, heartbeat_payload, telemetry_payload

from . import fake_pynvml as fake
from .contract import check_heartbeat
from .test_loop import RecordingControlPlane


def _gpus(n: int = 8) -> list[fake.FakeGpu]:
    return [
        fake.FakeGpu(uuid=f"GPU-00000000-0000-4000-8000-{i:012d}", serial=f"SIM{i:09d}")
        for i in range(n)
    ]


@pytest.fixture
def installed() -> Iterator[list[fake.FakeGpu]]:
    """The double installed as ``pynvml`` in ``sys.modules``, as the real one would be."""
    gpus = _gpus()
    before = sys.modules.get("pynvml")
    sys.modules["pynvml"] = fake.make(gpus)
    yield gpus
    if before is None:
        sys.modules.pop("pynvml", None)
    else:
        sys.modules["pynvml"] = before


def test_inventory_reads_every_field_through_the_imported_module(
    installed: list[fake.FakeGpu],
) -> None:
    source = open_source(None)  # no recorded name: NVML, imported as `pynvml`
    inv = source.inventory()
    assert (inv.driver_version, inv.cuda_version, inv.simulated) == ("550.54.15", "12.4", False)
    assert len(inv.gpus) == 8
    first = inv.gpus[0]
    assert first.name == "NVIDIA H100 80GB HBM3"
    assert first.memory_total_mib == 81559
    assert first.pci_bus_id == "00000000:18:00.0"  # bytes from NVML, decoded
    assert first.nvlink_active == 18
    assert first.serial == "SIM000000000"
    source.close()
    assert sys.modules["pynvml"].calls == {"init": 1, "shutdown": 1}  # type: ignore[attr-defined]


def test_an_unreadable_field_is_none_never_a_crash() -> None:
    gpus = _gpus(2)
    gpus[0].serial = fake.not_supported()
    gpus[0].bus_id = fake.not_supported()
    gpus[0].nvlink = fake.not_supported()  # a PCIe card
    gpus[1].nvlink = [1] * 12 + [0] * 6  # six links down
    source = NvmlSource(fake.make(gpus, driver=fake.not_supported(), cuda=fake.not_supported()))
    inv = source.inventory()
    assert (inv.driver_version, inv.cuda_version) == (None, None)
    assert (inv.gpus[0].serial, inv.gpus[0].pci_bus_id, inv.gpus[0].nvlink_active) == (
        None,
        None,
        None,
    )
    assert inv.gpus[1].nvlink_active == 12


def test_a_lost_gpu_is_left_out_of_the_inventory_and_telemetry() -> None:
    gpus = _gpus(8)
    gpus[5].uuid = fake.lost()  # fell off the bus: NVML_ERROR_GPU_IS_LOST
    gpus[5].utilization = fake.lost()
    gpus[5].temperature = fake.lost()
    gpus[6].handle = fake.lost()  # no handle at all
    source = NvmlSource(fake.make(gpus))
    assert [g.index for g in source.inventory().gpus] == [0, 1, 2, 3, 4, 7]
    samples = source.sample()
    telemetry, unreadable = telemetry_payload(samples)
    assert [t["index"] for t in telemetry] == [0, 1, 2, 3, 4, 7]
    assert unreadable == ["gpu 5: utilization_pct, temperature_c not readable"]


def test_sample_reads_telemetry_in_the_contracts_units() -> None:
    gpus = _gpus(2)
    gpus[1].ecc = {(0, 0): 3, (1, 0): 1, (0, 1): 9, (1, 1): 2}
    gpus[1].remapped = (4, 1, 0, 1)  # failure bit set
    gpus[1].reasons = 0x4 | 0x40 | 0x1  # SW power cap, HW thermal, idle (not reported)
    gpus[1].retired = {0: [0x1000], 1: [0x2000, 0x3000]}
    sample = NvmlSource(fake.make(gpus)).sample()[1]
    assert sample.utilization_pct == 37.0
    assert sample.memory_used_mib == 4
    assert sample.temperature_c == 41.0
    assert sample.power_w == pytest.approx(123.456)  # NVML gives milliwatts
    assert sample.sm_clock_mhz == 1980
    assert (sample.ecc_correctable, sample.ecc_uncorrectable) == (3, 1)  # volatile
    assert (sample.ecc_correctable_aggregate, sample.ecc_uncorrectable_aggregate) == (9, 2)
    assert sample.remap_failed is True
    assert sample.retired_pages == 3
    assert sample.throttle == ("power", "thermal")


def test_counters_the_gpu_does_not_keep_go_as_zero_and_unreadable_values_as_absent() -> None:
    gpus = _gpus(2)
    gpus[0].ecc = fake.not_supported()  # ECC off
    gpus[0].retired = fake.not_supported()  # Hopper remaps rows instead
    gpus[0].remapped = fake.not_supported()
    gpus[0].reasons = fake.not_supported()
    gpus[0].sm_clock = fake.not_supported()
    gpus[1].power_mw = fake.not_supported()
    samples = NvmlSource(fake.make(gpus)).sample()
    assert samples[0].ecc_uncorrectable is None
    assert samples[0].retired_pages is None
    assert samples[0].remap_failed is None
    assert samples[0].throttle == ()
    telemetry, unreadable = telemetry_payload(samples)
    assert len(telemetry) == 1
    entry = telemetry[0]
    assert (entry["ecc_uncorrectable"], entry["retired_pages"], entry["remap_failed"]) == (
        0,
        0,
        False,
    )
    assert entry["sm_clock_mhz"] is None
    assert unreadable == ["gpu 1: power_w not readable"]


def test_xid_events_are_drained_per_gpu_where_supported() -> None:
    gpus = _gpus(3)
    gpus[2].events = 0  # no XID events on this GPU
    nv = fake.make(gpus)
    source = NvmlSource(nv)
    nv.pending_xids.extend([(1, 79), (0, 13), (1, 48), (2, 31)])  # type: ignore[attr-defined]
    first = source.sample()
    assert [s.xid for s in first] == [(13,), (79, 48), ()]
    assert [s.xid for s in source.sample()] == [(), (), ()]  # drained


def test_event_set_not_available_means_no_xids_not_a_crash() -> None:
    nv = fake.make(_gpus(1))
    nv.nvmlEventSetCreate = lambda: (_ for _ in ()).throw(fake.not_supported())  # type: ignore[attr-defined]
    assert NvmlSource(nv).sample()[0].xid == ()


def test_throttle_names_cover_power_and_thermal_bits() -> None:
    assert throttle_names(0) == ()
    assert throttle_names(0x80 | 0x20) == ("power", "thermal")
    assert throttle_names(0x8) == ("hw_slowdown",)
    assert throttle_names(0x1 | 0x2) == ()  # idle, application clocks: not problems


def test_nvml_that_cannot_start_is_reported_as_a_failed_check_with_no_gpus() -> None:
    nv = fake.make([], init_error=fake.NVMLError(fake.NVML_ERROR_LIBRARY_NOT_FOUND))
    source = ReopeningSource(lambda: NvmlSource(nv))
    plane = RecordingControlPlane()
    Agent(node_id="node_1", source=source, control_plane=plane, checks=list).run(once=True)
    body = plane.bodies[0]
    check_heartbeat(body)
    assert body["inventory"]["gpus"] == []
    assert body["simulated"] is False
    assert body["checks"] == [
        {
            "name": "nvml",
            "status": "fail",
            "message": "GPU source unavailable: NVMLError: NVML Shared Library Not Found",
            "value": None,
            "unit": None,
        }
    ]


def test_nvml_payload_matches_the_contract() -> None:
    gpus = _gpus(8)
    source = NvmlSource(fake.make(gpus))
    body = heartbeat_payload(
        node_id="node_1",
        agent_version="0.1.0",
        simulated=False,
        sent_at=datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
        inventory=source.inventory(),
        samples=source.sample(),
        checks=[],
    )
    check_heartbeat(body)


def test_odd_nvml_strings_are_kept_within_the_contracts_bounds() -> None:
    gpus = _gpus(1)
    gpus[0].name = "NVIDIA " + "X" * 200 + "\x00"
    gpus[0].serial = "S" * 100
    source = NvmlSource(fake.make(gpus, driver="9" * 40))
    body = heartbeat_payload(
        node_id="node_1",
        agent_version="0.1.0",
        simulated=False,
        sent_at=datetime(2026, 5, 1, tzinfo=UTC),
        inventory=source.inventory(),
        samples=source.sample(),
        checks=[CheckResult("gpu 0 / gemm (bf16)", "pass", "line\nbreak", 1.0, "TFLOP/s")],
    )
    check_heartbeat(body)
    assert body["checks"][0]["name"] == "gpu_0___gemm__bf16_"
    assert body["checks"][0]["message"] == "line break"
