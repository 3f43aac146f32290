"""Soak: steady mixed load (instances, clusters, usage, studio chat) on one API and one worker on
PostgreSQL, no faults; samples the processes' resident memory and the clients' latencies, and
reports the memory slope (MiB/hour, least squares over the samples after a warm-up) and the p99
latency of the first and last thirds of the run. The suite runs a short version
(``NEOCLOUD_SOAK_S``, default 25 s); ``make soak`` runs 30 minutes and asserts flat memory."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from neocloud.client import Client
from neocloud.db.engine import Database

from .harness import fake_upstream, fleet_spec, platform
from .invariants import Record, check
from .workload import make_tenant, studio_loop, tenant_loop, usage_loop

SOAK_S = float(os.environ.get("NEOCLOUD_SOAK_S", "25"))
SAMPLE_S = 1.0
# Over a long soak memory must be flat; the short run only reports (warm-up dominates it).
MAX_SLOPE_MIB_H = float(os.environ.get("NEOCLOUD_SOAK_MAX_SLOPE_MIB_H", "50"))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return cov / var * 3600 if var else 0.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def test_slope_of_a_line_is_its_rate() -> None:
    assert abs(slope_per_hour([(t, 100 + t / 60) for t in range(100)]) - 60) < 1e-9
    assert slope_per_hour([(t, 5.0) for t in range(10)]) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_soak_steady_load_memory_and_latency(db: Database, tmp_path: Path) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    with (
        fake_upstream(tmp_path) as upstream,
        platform(url, tmp_path, fleet_spec(nodes_per_rack=3)) as plat,
    ):
        api, worker = plat.add_api("api0"), plat.add_worker("w0")
        for proc in (api, worker):
            plat.start(proc)
        for proc in (api, worker):
            plat.wait_ready(proc)
        admin = Client(api.url or "", plat.admin_key, retries=3)
        tenants = [make_tenant(admin, f"s{n}", quota=64) for n in range(2)]
        admin.studio.models.add(
            "soak/fake", upstream_urls=[upstream], upstream_model="fake",
            input_price_per_m="1", output_price_per_m="2",
        )  # fmt: skip
        admin.close()
        record, stop = Record(), threading.Event()
        threads = [
            threading.Thread(target=tenant_loop, args=(plat, t, record, stop, 200 + n))
            for n, t in enumerate(tenants)
        ]
        threads.append(
            threading.Thread(
                target=usage_loop, args=(plat, plat.admin_key, tenants, record, stop, 9)
            )
        )
        threads.append(
            threading.Thread(
                target=studio_loop, args=(plat, tenants[0], record, stop, 11, "soak/fake")
            )
        )
        started = time.monotonic()
        for t in threads:
            t.start()
        memory: dict[str, list[tuple[float, float]]] = {"api": [], "worker": []}
        while (elapsed := time.monotonic() - started) < SOAK_S:
            memory["api"].append((elapsed, rss_mib(api.pid)))
            memory["worker"].append((elapsed, rss_mib(worker.pid)))
            time.sleep(SAMPLE_S)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert api.alive()
        assert worker.alive()
        admin = Client(api.url or "", plat.admin_key, retries=3)
        time.sleep(5)  # the last steps (1 s provisioning) finish
        violations = check(
            db=db,
            admin=admin,
            record=record,
            now=datetime.now(UTC),
            period=datetime.now(UTC).strftime("%Y-%m"),
            transient_timeout=timedelta(seconds=30),
        )
        admin.close()

    warm = SOAK_S / 3  # the first third warms caches and pools
    slopes = {
        kind: slope_per_hour([(t, v) for t, v in samples if t >= warm])
        for kind, samples in memory.items()
    }
    lat = sorted(record.latencies_s)
    third = (lat[-1][0] - lat[0][0]) / 3 if lat else 0
    first = p99([d for t, d in lat if t < lat[0][0] + third])
    last = p99([d for t, d in lat if t >= lat[-1][0] - third])
    ops = sum(record.operations.values())
    print(
        f"\nsoak: {SOAK_S:.0f} s, {ops} operations ({ops / SOAK_S:.1f}/s), {len(lat)} calls; "
        f"RSS api {memory['api'][0][1]:.0f}->{memory['api'][-1][1]:.0f} MiB "
        f"(slope {slopes['api']:+.1f} MiB/h), worker {memory['worker'][0][1]:.0f}->"
        f"{memory['worker'][-1][1]:.0f} MiB (slope {slopes['worker']:+.1f} MiB/h); "
        f"p99 latency first third {first * 1000:.0f} ms, last third {last * 1000:.0f} ms; "
        f"violations: {len(violations)}"
    )
    for v in violations[:20]:
        print("  violation:", v)
    assert violations == []
    assert ops > 20
    if SOAK_S >= 600:
        assert max(slopes.values()) < MAX_SLOPE_MIB_H, slopes
