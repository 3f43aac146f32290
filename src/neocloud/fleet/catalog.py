"""The GPU catalog: the accelerators this cloud can host, with their public figures.

Figures are vendor datasheet values per GPU: memory in GB (decimal, as vendors quote it), TDP in
watts, peak dense bf16 TFLOP/s (without sparsity), HBM bandwidth in TB/s. ``nvlink_domain`` is the
number of GPUs that share one NVLink/NVSwitch domain (1: PCIe only). ``max_gpus_per_node`` is the
most GPUs one server (or GB200 compute tray) carries. List prices are per GPU-hour, on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.money import Money


@dataclass(frozen=True, slots=True)
class GpuModel:
    id: str
    name: str
    vendor: str
    architecture: str
    memory_gb: int
    tdp_w: int
    nvlink_domain: int
    max_gpus_per_node: int
    bf16_tflops: Decimal
    hbm_tbps: Decimal
    list_price_per_gpu_hour: Money
    aliases: tuple[str, ...] = ()


CATALOG: tuple[GpuModel, ...] = (
    GpuModel(
        "A100-SXM-80GB",
        "NVIDIA A100 SXM 80GB",
        "NVIDIA",
        "Ampere",
        80,
        400,
        8,
        8,
        Decimal("312"),
        Decimal("2.039"),
        Money.of("1.80"),
        ("A100", "A100-80GB", "A100-SXM"),
    ),
    GpuModel(
        "H100-SXM-80GB",
        "NVIDIA H100 SXM 80GB",
        "NVIDIA",
        "Hopper",
        80,
        700,
        8,
        8,
        Decimal("989"),
        Decimal("3.35"),
        Money.of("2.99"),
        ("H100", "H100-SXM", "H100-80GB"),
    ),
    GpuModel(
        "H200-SXM-141GB",
        "NVIDIA H200 SXM 141GB",
        "NVIDIA",
        "Hopper",
        141,
        700,
        8,
        8,
        Decimal("989"),
        Decimal("4.8"),
        Money.of("3.49"),
        ("H200", "H200-SXM", "H200-141GB"),
    ),
    GpuModel(
        "B200-SXM-180GB",
        "NVIDIA B200 SXM 180GB",
        "NVIDIA",
        "Blackwell",
        180,
        1000,
        8,
        8,
        Decimal("2250"),
        Decimal("8.0"),
        Money.of("4.99"),
        ("B200", "B200-SXM", "HGX-B200"),
    ),
    GpuModel(
        "GB200-NVL72",
        "NVIDIA GB200 NVL72 (per Blackwell GPU)",
        "NVIDIA",
        "Blackwell",
        186,
        1200,
        72,
        4,
        Decimal("2500"),
        Decimal("8.0"),
        Money.of("5.99"),
        ("GB200", "GB200-NVL"),
    ),
    GpuModel(
        "L40S-48GB",
        "NVIDIA L40S 48GB",
        "NVIDIA",
        "Ada Lovelace",
        48,
        350,
        1,
        10,
        Decimal("362"),
        Decimal("0.864"),
        Money.of("1.49"),
        ("L40S", "L40S-PCIE"),
    ),
)

_BY_KEY: dict[str, GpuModel] = {}
for _model in CATALOG:
    for _key in (_model.id, *_model.aliases):
        _BY_KEY[_key.upper()] = _model


def find_gpu_model(name: str) -> GpuModel | None:
    """The catalog entry for an id or alias, case-insensitively (``h100`` → H100-SXM-80GB)."""
    return _BY_KEY.get(name.strip().upper())


def resolve_gpu_model(name: str, *, param: str = "gpu_model") -> GpuModel:
    """Like ``find_gpu_model`` but raises ``ValidationFailed`` naming the known models."""
    model = find_gpu_model(name)
    if model is None:
        known = ", ".join(m.id for m in CATALOG)
        raise ValidationFailed(
            f"unknown GPU model {name!r}; known models: {known} (short names like H100 work too)",
            code="unknown_gpu_model",
            param=param,
            details={"known": [m.id for m in CATALOG]},
        )
    return model
