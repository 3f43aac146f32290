"""`neocloud sim cluster`: the real compute service on a virtual clock, deterministic."""

from __future__ import annotations

from neocloud.sim.cluster import LLAMA3_RATE, SimConfig, run


def test_simulation_is_deterministic_and_reports_every_figure() -> None:
    cfg = SimConfig(
        days=0.5, fleet_gpus=128, arrivals_per_hour=8, failure_rate=400 * LLAMA3_RATE, seed=3
    )
    first = run(cfg)
    assert first == run(cfg)
    assert 0 < first.allocation_ratio <= 1
    assert first.node_failures > 0
    assert sum(c["requests"] for c in first.classes.values()) > 0
    assert all(0 <= c["admitted_share"] <= 1 for c in first.classes.values())
    assert round(LLAMA3_RATE, 2) == 3.79
