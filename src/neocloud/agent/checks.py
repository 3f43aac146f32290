"""Active checks: does each GPU still deliver what its model should?

Two measurements per GPU, with torch on CUDA, run only when the control plane answers
``run_active_checks: true`` (the node is idle: available or in burn-in, nothing allocated —
never on a tenant's node), at most once an hour by default, and by ``--print`` on demand:

- ``gpuN.gemm_bf16``: bf16 matrix multiplications of 8192 x 8192 by 8192 x 8192 (2·n³ FLOP each),
  timed with CUDA events after a warm-up, in TFLOP/s;
- ``gpuN.hbm_bandwidth``: a device-to-device copy of 1 GiB (read and written: 2 GiB moved per
  copy), timed the same way, in GB/s.

Each figure is compared with the model's peak (``PEAKS``: the fleet catalog's dense bf16
TFLOP/s and HBM bandwidth; the agent does not import the fleet package, so the figures are
repeated here and a test keeps them equal to the catalog's):

====================  ========
measured / peak       status
====================  ========
≥ 0.6                 pass
≥ 0.3 and < 0.6       warn
< 0.3                 fail
====================  ========

A good H100 SXM reaches about 0.6 to 0.75 of its datasheet bf16 peak on this GEMM and about
0.8 of its HBM bandwidth on a copy, so ``warn`` means "slower than a healthy GPU of this model"
and ``fail`` "far slower: throttled hard, degraded memory or a bad GPU". Without CUDA (or
torch) the checks say ``warn`` with ``skipped: no CUDA device`` — never a made-up number; on a
recorded (simulated) GPU source they say ``skipped: recorded GPU source``. A model without a
peak figure is measured and reported as ``warn`` ("no peak figure").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from neocloud.agent.wire import CheckResult, one_line

WARN_BELOW = 0.6
"""Below this fraction of the model's peak, a check warns."""
FAIL_BELOW = 0.3
"""Below this fraction of the model's peak, a check fails."""

GEMM = "gemm_bf16"
HBM = "hbm_bandwidth"
GPUS_CHECKED_MAX = 8  # two results per GPU: the contract's 16 check results at most
GEMM_N = 8192
GEMM_ITERS = 20
COPY_BYTES = 1 << 30
COPY_ITERS = 20


@dataclass(frozen=True, slots=True)
class Peak:
    """A GPU model's datasheet figures: dense bf16 TFLOP/s and HBM bandwidth in GB/s."""

    model_id: str
    bf16_tflops: float
    hbm_gbps: float


# NVML/CUDA device-name fragment → the fleet catalog model (ids and figures as in
# neocloud.fleet.catalog; tests/agent/test_checks.py keeps them equal). Checked in order:
# "GB200" before "B200". H100 PCIe and H100 NVL have other figures and no catalog entry.
PEAKS: tuple[tuple[str, Peak], ...] = (
    ("A100-SXM4-80GB", Peak("A100-SXM-80GB", 312.0, 2039.0)),
    ("H100 80GB HBM3", Peak("H100-SXM-80GB", 989.0, 3350.0)),
    ("H200", Peak("H200-SXM-141GB", 989.0, 4800.0)),
    ("GB200", Peak("GB200-NVL72", 2500.0, 8000.0)),
    ("B200", Peak("B200-SXM-180GB", 2250.0, 8000.0)),
    ("L40S", Peak("L40S-48GB", 362.0, 864.0)),
)


def peak_for(device_name: str) -> Peak | None:
    """The peak figures for an NVML or CUDA device name (``NVIDIA H100 80GB HBM3``)."""
    upper = device_name.upper()
    for fragment, peak in PEAKS:
        if fragment.upper() in upper:
            return peak
    return None


def judge(name: str, measured: float, peak: float | None, unit: str, what: str) -> CheckResult:
    """A measured figure against the peak, by the table in this module's docstring."""
    if peak is None:
        return CheckResult(
            name,
            "warn",
            f"{what}: {measured:.1f} {unit}; no peak figure for this model",
            measured,
            unit,
        )
    ratio = measured / peak
    status = "pass" if ratio >= WARN_BELOW else "warn" if ratio >= FAIL_BELOW else "fail"
    message = f"{what}: {measured:.1f} {unit}, {ratio:.2f} of the {peak:g} {unit} peak"
    return CheckResult(name, status, message, round(measured, 3), unit)


def skipped(reason: str) -> list[CheckResult]:
    """Both checks as ``warn`` with ``skipped: <reason>`` and no value."""
    return [
        CheckResult(GEMM, "warn", f"skipped: {reason}"),
        CheckResult(HBM, "warn", f"skipped: {reason}"),
    ]


def run_active_checks(*, simulated: bool = False, torch: Any = None) -> list[CheckResult]:
    """Run the GEMM and HBM checks on each CUDA device (the first 8). ``simulated``: the
    agent reads a recorded GPU source, so the checks are skipped. ``torch`` is the module
    (imported here when not given)."""
    if simulated:
        return skipped("recorded GPU source (simulated); no real GPU measured")
    if torch is None:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            return skipped("no CUDA device (torch is not installed)")
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return skipped("no CUDA device")
    results: list[CheckResult] = []
    for index in range(min(torch.cuda.device_count(), GPUS_CHECKED_MAX)):
        peak = peak_for(str(torch.cuda.get_device_name(index)))
        results.append(
            _measure(
                torch,
                index,
                GEMM,
                lambda i=index: gemm_tflops(torch, i),
                peak.bf16_tflops if peak else None,
                "TFLOP/s",
            )
        )
        results.append(
            _measure(
                torch,
                index,
                HBM,
                lambda i=index: copy_gbps(torch, i),
                peak.hbm_gbps if peak else None,
                "GB/s",
            )
        )
    return results


def _measure(
    torch: Any, index: int, check: str, measure: Any, peak: float | None, unit: str
) -> CheckResult:
    name = f"gpu{index}.{check}"
    what = f"gpu {index} {'bf16 GEMM' if check == GEMM else 'HBM copy'}"
    try:
        value = float(measure())
    except torch.cuda.OutOfMemoryError:
        return CheckResult(name, "warn", f"{what} skipped: not enough free GPU memory")
    except RuntimeError as exc:  # a CUDA error on an idle GPU is a fault of the GPU
        return CheckResult(name, "fail", one_line(f"{what} failed: {exc}", 1000))
    finally:
        torch.cuda.empty_cache()
    return judge(name, value, peak, unit, what)


def _timed(torch: Any, index: int, step: Any, iters: int, warmup: int) -> float:
    """Seconds for ``iters`` calls of ``step`` on GPU ``index``, after ``warmup`` calls."""
    with torch.cuda.device(index):
        for _ in range(warmup):
            step()
        torch.cuda.synchronize(index)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1000.0


def gemm_tflops(torch: Any, index: int, n: int = GEMM_N, iters: int = GEMM_ITERS) -> float:
    """bf16 GEMM throughput of GPU ``index`` in TFLOP/s (n x n by n x n, 2·n³ FLOP each)."""
    device = torch.device("cuda", index)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    seconds = _timed(torch, index, lambda: torch.matmul(a, b, out=c), iters, warmup=3)
    return 2.0 * n**3 * iters / seconds / 1e12


def copy_gbps(torch: Any, index: int, nbytes: int = COPY_BYTES, iters: int = COPY_ITERS) -> float:
    """Device-to-device copy bandwidth of GPU ``index`` in GB/s (bytes read plus written)."""
    device = torch.device("cuda", index)
    src = torch.empty(nbytes, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    seconds = _timed(torch, index, lambda: dst.copy_(src), iters, warmup=2)
    return 2.0 * nbytes * iters / seconds / 1e9
