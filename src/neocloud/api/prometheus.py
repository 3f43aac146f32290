"""``GET /metrics``: the operator's Prometheus exposition (prometheus-client).

Rendered per scrape from the database, so every API process answers the same: nodes by state
and health, GPUs by model and state, agents reporting, and each GPU's latest telemetry under
dcgm-exporter's names and labels (``DCGM_FI_DEV_GPU_UTIL{gpu,UUID,Hostname,modelName}``; the
fields are those of dcgm-exporter's ``etc/default-counters.csv``, ECC and retired pages from
its commented-out lines; all are gauges here, so a name is exactly dcgm-exporter's). Two
families are this process's own: the API's request latency (a histogram observed by a small
ASGI middleware, labelled by the route's handler, never by raw path) and the scheduler's cycle
time (``compute.worker``; only the process that holds the scheduler lease observes cycles).

It needs an operator API key (staff or admin) unless ``NEOCLOUD_METRICS_PUBLIC=true``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neocloud.compute.worker import CYCLE_SECONDS
from neocloud.db.engine import Database
from neocloud.fleet.catalog import CATALOG
from neocloud.fleet.tables import GpuTelemetryLatestRow, NodeRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings
from neocloud.web.deps import AppContext, current_principal

# One scrape reads at most this many GPUs' telemetry (31,250 8-GPU nodes is 250,000: a fleet
# that large splits its scrape by shard); telemetry older than STALE is left out.
MAX_SCRAPE_GPUS = 100_000
STALE = timedelta(minutes=10)
MODEL_NAMES = {m.id: m.name for m in CATALOG}

REQUEST_SECONDS = Histogram(
    "neocloud_api_request_duration_seconds",
    "API request latency in seconds, by method, handler and status class (this process).",
    ["method", "handler", "status"],
    registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# (metric, help, column) — dcgm-exporter's field names and units.
DCGM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_pct"),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib"),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    (
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Total number of single-bit volatile ECC errors.",
        "ecc_correctable",
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        "ecc_uncorrectable",
    ),
    ("DCGM_FI_DEV_RETIRED_DBE", "Total number of retired pages (all causes).", "retired_pages"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed.", "remap_failed"),
)
GPU_LABELS = ["gpu", "UUID", "Hostname", "modelName", "node"]


class FleetCollector(Collector):
    """Reads the fleet's numbers from the database at each scrape."""

    def __init__(self, db: Database, clock: Clock, silence_s: float) -> None:
        self.db, self.clock, self.silence_s = db, clock, silence_s

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        nodes = GaugeMetricFamily(
            "neocloud_nodes", "Nodes by lifecycle state and health.", labels=["state", "health"]
        )
        gpus = GaugeMetricFamily(
            "neocloud_gpus", "GPUs by model and node state.", labels=["gpu_model", "state"]
        )
        agents = GaugeMetricFamily(
            "neocloud_agents_reporting",
            "Nodes whose agent heartbeated within NEOCLOUD_AGENT_SILENCE_S.",
        )
        fields = {
            column: GaugeMetricFamily(name, text, labels=GPU_LABELS)
            for name, text, column in DCGM_FIELDS
        }
        xid = GaugeMetricFamily(
            "DCGM_FI_DEV_XID_ERRORS",
            "Value of the last XID error encountered (since the last heartbeat).",
            labels=GPU_LABELS,
        )
        with self.db.transaction() as s:
            for state, health, count in s.execute(
                sa.select(NodeRow.state, NodeRow.health, sa.func.count()).group_by(
                    NodeRow.state, NodeRow.health
                )
            ):
                nodes.add_metric([state, health], float(count))
            for model, state, total in s.execute(
                sa.select(
                    NodeRow.gpu_model, NodeRow.state, sa.func.sum(NodeRow.gpu_count)
                ).group_by(NodeRow.gpu_model, NodeRow.state)
            ):
                gpus.add_metric([model, state], float(total or 0))
            seen = now - timedelta(seconds=self.silence_s)
            agents.add_metric(
                [],
                float(
                    s.scalar(sa.select(sa.func.count()).where(NodeRow.agent_seen_at >= seen)) or 0
                ),
            )
            t = GpuTelemetryLatestRow
            rows = s.execute(
                sa.select(t, NodeRow.hostname, NodeRow.gpu_model)
                .join(NodeRow, NodeRow.id == t.node_id)
                .where(t.at >= now - STALE)
                .order_by(t.node_id, t.gpu_index)
                .limit(MAX_SCRAPE_GPUS)
            )
            for row, hostname, model in rows:
                labels = [
                    str(row.gpu_index),
                    row.uuid or "",
                    hostname,
                    MODEL_NAMES.get(model, model),
                    row.node_id,
                ]
                for column, family in fields.items():
                    value = getattr(row, column)
                    if value is not None:
                        family.add_metric(labels, float(value))
                xid.add_metric(labels, float(row.xid[-1] if row.xid else 0))
        yield nodes
        yield gpus
        yield agents
        yield from fields.values()
        yield xid


class _Wrapped(Collector):
    """A metric kept outside any registry (so every app can register it), collected as is."""

    def __init__(self, *metrics: Any) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self.metrics:
            yield from m.collect()


def build_registry(db: Database, clock: Clock, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, clock, settings.agent_silence_s))
    registry.register(_Wrapped(REQUEST_SECONDS, CYCLE_SECONDS))
    return registry


class LatencyMiddleware:
    """Observes each request's duration in ``REQUEST_SECONDS`` (one histogram update: cheap)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            endpoint = scope.get("endpoint")
            handler = getattr(endpoint, "__name__", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], handler, f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


def install_metrics(app: FastAPI, *, db: Database, clock: Clock, settings: Settings) -> None:
    """Mount ``GET /metrics`` (outside the JSON API's document) and the latency middleware."""
    registry = build_registry(db, clock, settings)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not settings.metrics_public:
            ctx: AppContext = request.app.state.ctx
            principal = await run_in_threadpool(current_principal, request, ctx, None)
            principal.require_operator()
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(LatencyMiddleware)
