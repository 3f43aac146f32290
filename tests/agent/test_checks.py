"""The active checks: the thresholds table, the peaks against the fleet catalog, and what they
say where there is no CUDA (this machine: torch installed, CPU only)."""

from __future__ import annotations

import sys
import types

import pytest

from neocloud.agent.checks import (
    FAIL_BELOW,
    PEAKS,
    WARN_BELOW,
    judge,
    peak_for,
    run_active_checks,
)
from neocloud.fleet.catalog import find_gpu_model


def test_without_cuda_both_checks_warn_skipped_with_no_number() -> None:
    torch = pytest.importorskip("torch")
    assert not torch.cuda.is_available()  # this machine: a CPU build
    results = run_active_checks()
    assert [(r.name, r.status, r.message, r.value) for r in results] == [
        ("gemm_bf16", "warn", "skipped: no CUDA device", None),
        ("hbm_bandwidth", "warn", "skipped: no CUDA device", None),
    ]


def test_without_torch_the_checks_are_skipped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # None in sys.modules: ImportError
    results = run_active_checks()
    assert {r.message for r in results} == {"skipped: no CUDA device (torch is not installed)"}


def test_a_recorded_source_is_never_measured() -> None:
    results = run_active_checks(simulated=True)
    assert {(r.status, r.value) for r in results} == {("warn", None)}
    assert all("simulated" in (r.message or "") for r in results)


@pytest.mark.parametrize(
    ("measured", "status"),
    [
        (989.0, "pass"),
        (700.0, "pass"),
        (593.4, "pass"),
        (593.3, "warn"),
        (300.0, "warn"),
        (296.7, "warn"),
        (296.6, "fail"),
        (0.0, "fail"),
    ],
)
def test_thresholds_table(measured: float, status: str) -> None:
    """≥ 0.6 of peak passes, ≥ 0.3 warns, below fails (peak 989: 593.4 and 296.7)."""
    result = judge("gpu0.gemm_bf16", measured, 989.0, "TFLOP/s", "gpu 0 bf16 GEMM")
    assert result.status == status
    assert result.value == measured
    assert result.unit == "TFLOP/s"
    assert (WARN_BELOW, FAIL_BELOW) == (0.6, 0.3)


def test_a_model_without_a_peak_is_measured_and_warned_about() -> None:
    result = judge("gpu0.gemm_bf16", 500.0, None, "TFLOP/s", "gpu 0 bf16 GEMM")
    assert (result.status, result.value) == ("warn", 500.0)
    assert "no peak figure" in (result.message or "")


@pytest.mark.parametrize(
    ("device", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB"),
        ("NVIDIA H200", "H200-SXM-141GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
        ("NVIDIA B200", "B200-SXM-180GB"),
        ("NVIDIA GB200", "GB200-NVL72"),
        ("NVIDIA L40S", "L40S-48GB"),
        ("NVIDIA H100 PCIe", None),  # other figures, not in the catalog
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_device_names_map_to_catalog_models(device: str, model: str | None) -> None:
    peak = peak_for(device)
    assert (peak.model_id if peak else None) == model


def test_peaks_equal_the_fleet_catalogs_figures() -> None:
    """The agent repeats the catalog's figures (it may not import fleet): keep them equal."""
    for _, peak in PEAKS:
        model = find_gpu_model(peak.model_id)
        assert model is not None, peak.model_id
        assert peak.bf16_tflops == float(model.bf16_tflops)
        assert peak.hbm_gbps == float(model.hbm_tbps * 1000)


def test_a_cuda_error_fails_the_check_and_out_of_memory_only_warns() -> None:
    """A torch double with CUDA 'available' whose allocations fail: the check reports, never
    raises (a real GPU run is bench/agent/gpu_check.sh)."""

    class OutOfMemoryError(RuntimeError):
        pass

    calls = {"n": 0}

    def randn(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def empty(*args: object, **kwargs: object) -> object:
        raise OutOfMemoryError("CUDA out of memory")

    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        get_device_name=lambda i: "NVIDIA H100 80GB HBM3",
        OutOfMemoryError=OutOfMemoryError,
        empty_cache=lambda: None,
    )
    torch = types.SimpleNamespace(
        cuda=cuda, device=lambda *a: a, randn=randn, empty=empty, bfloat16="bf16", uint8="u8"
    )
    gemm, hbm = run_active_checks(torch=torch)
    assert (gemm.name, gemm.status, gemm.value) == ("gpu0.gemm_bf16", "fail", None)
    assert "illegal memory access" in (gemm.message or "")
    assert (hbm.name, hbm.status) == ("gpu0.hbm_bandwidth", "warn")
    assert "not enough free GPU memory" in (hbm.message or "")
