"""The passive health rules, one test per row of the table (pure: no database)."""

from __future__ import annotations

import pytest

from neocloud.fleet.catalog import CATALOG
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.health_rules import (
    XID_FATAL,
    AgentCheck,
    GpuSample,
    Rule,
    evaluate,
    inventory_rules,
    model_matches,
    telemetry_rules,
)

PASS, WARN, FAIL = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL
H100 = "H100-SXM-80GB"


def _by_name(rules: list[Rule]) -> dict[str, Rule]:
    return {r.name: r for r in rules}


def test_a_healthy_beat_passes_every_rule() -> None:
    got = _by_name(telemetry_rules([GpuSample(i, temperature_c=60) for i in range(8)]))
    assert set(got) == {"gpu.ecc", "gpu.remap", "gpu.throttle", "gpu.temp", "gpu.xid"}
    assert {r.status for r in got.values()} == {PASS}


@pytest.mark.parametrize(
    ("sample", "name", "status", "message"),
    [
        (GpuSample(2, ecc_uncorrectable=1), "gpu.ecc", FAIL, "gpu 2: uncorrectable ECC errors"),
        (GpuSample(1, remap_failed=True), "gpu.remap", FAIL, "gpu 1: memory row remapping failed"),
        (GpuSample(0, throttle=("thermal",)), "gpu.throttle", WARN, "gpu 0: throttled (thermal)"),
        (GpuSample(0, throttle=("power",)), "gpu.throttle", WARN, "gpu 0: throttled (power)"),
        (GpuSample(0, throttle=("idle",)), "gpu.throttle", PASS, None),
        (GpuSample(4, temperature_c=90.0), "gpu.temp", WARN, "gpu 4: 90 °C (warn at 90 °C)"),
        (GpuSample(4, temperature_c=89.9), "gpu.temp", PASS, None),
        (GpuSample(7, xid=(79,)), "gpu.xid", FAIL, "gpu 7: XID 79"),
        (GpuSample(7, xid=(13,)), "gpu.xid", WARN, "gpu 7: XID 13"),
        (GpuSample(7, xid=(13, 48)), "gpu.xid", FAIL, "gpu 7: XID 48"),
    ],
)
def test_telemetry_rules(
    sample: GpuSample, name: str, status: CheckStatus, message: str | None
) -> None:
    got = _by_name(telemetry_rules([sample]))[name]
    assert (got.status, got.message) == (status, message)


def test_fatal_xids_are_the_documented_set() -> None:
    assert frozenset({48, 63, 64, 74, 79, 94, 95}) == XID_FATAL
    for xid in XID_FATAL:
        assert _by_name(telemetry_rules([GpuSample(0, xid=(xid,))]))["gpu.xid"].status is FAIL


def test_no_telemetry_no_telemetry_rules() -> None:
    assert telemetry_rules([]) == []


@pytest.mark.parametrize(
    ("names", "count", "status"),
    [
        (["NVIDIA H100 80GB HBM3"] * 8, 8, PASS),
        (["NVIDIA H100 80GB HBM3"] * 7, 8, FAIL),
        (["NVIDIA H100 80GB HBM3"] * 8, 4, PASS),  # more than registered is not a failure
    ],
)
def test_gpu_count(names: list[str], count: int, status: CheckStatus) -> None:
    got = _by_name(inventory_rules(gpu_names=names, gpu_count=count, gpu_model=H100))
    assert got["gpu.count"].status is status
    if status is FAIL:
        assert got["gpu.count"].message == "7 of 8 GPUs found: a GPU fell off the bus or is missing"


@pytest.mark.parametrize(
    ("nvml", "model", "ok"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB", True),
        ("NVIDIA H100 PCIe", "H100-SXM-80GB", False),
        ("NVIDIA H200", "H200-SXM-141GB", True),
        ("NVIDIA H200", "H100-SXM-80GB", False),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB", True),
        ("NVIDIA A100-SXM4-80GB", "H100-SXM-80GB", False),
    ],
)
def test_model_matching(nvml: str, model: str, ok: bool) -> None:
    entry = next(m for m in CATALOG if m.id == model)
    assert model_matches(nvml, entry) is ok


def test_wrong_model_fails_with_the_names() -> None:
    got = _by_name(inventory_rules(gpu_names=["NVIDIA H200"], gpu_count=1, gpu_model=H100))
    assert got["gpu.model"] == Rule(
        "gpu.model", FAIL, "found NVIDIA H200; the node is registered as H100-SXM-80GB"
    )


def test_unknown_model_skips_the_model_rule() -> None:
    assert "gpu.model" not in _by_name(
        inventory_rules(gpu_names=["X"], gpu_count=1, gpu_model="custom")
    )


def test_agent_checks_map_as_given_and_inventory_rules_need_an_inventory() -> None:
    got = evaluate(
        gpus=[],
        inventory_names=None,
        gpu_count=8,
        gpu_model=H100,
        checks=[AgentCheck("gemm_bf16", "warn", "610 TFLOP/s, 62 % of peak")],
    )
    assert got == [Rule("agent.gemm_bf16", WARN, "610 TFLOP/s, 62 % of peak")]
