"""The application factory: one FastAPI app with every context's router mounted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from neocloud import __version__
from neocloud.api.docs import install_docs
from neocloud.api.errors import install_error_handlers
from neocloud.api.middleware import BodyLimitAndIdempotencyMiddleware, RequestContextMiddleware
from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock, SystemClock
from neocloud.kernel.settings import Settings
from neocloud.web.deps import AppContext
from neocloud.web.schemas import ResponseModel

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"

DESCRIPTION = """
The neocloud platform API.

* Authenticate with `Authorization: Bearer <api key>`.
* Lists answer `{"object": "list", "data": [...], "has_more": bool, "next_cursor": str|null}`;
  pass `after=<next_cursor>` for the next page and `limit` (at most 1000) for its size.
* Errors answer `{"error": {"type", "code", "message", "param"}}` with the matching status.
* Creating POSTs take an `Idempotency-Key` header: a retry with the same key and body replays
  the first response; the same key with another body is a 409.
* Times are RFC 3339 UTC; money is a decimal string with a currency.
* Rate limits, per API key (per address without one): 600 requests a minute, of which 240
  writes, by default (an operator sets `NEOCLOUD_API_REQUESTS_PER_MINUTE` and
  `NEOCLOUD_API_WRITES_PER_MINUTE`). Every answer carries `X-RateLimit-Limit`, `-Remaining`,
  `-Used`, `-Reset` (UTC epoch seconds) and `-Resource`; past the limit a 429
  `rate_limit_exceeded` says in `Retry-After` how many seconds to wait.
"""


class HealthOut(ResponseModel):
    status: str
    version: str


def create_app(*, settings: Settings, db: Database, clock: Clock | None = None) -> FastAPI:
    """Build the app around an existing database (migrations are the caller's job)."""
    clock = clock or SystemClock()
    from neocloud.studio.runtime import build_runtime

    drivers = None
    if settings.studio_runner == "node":  # batches reach their nodes through the drivers
        from neocloud.api.platform import platform_drivers

        drivers = platform_drivers(settings, db=db, clock=clock)
    studio = build_runtime(db=db, clock=clock, settings=settings, drivers=drivers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        studio.usage.start()  # flushes metered usage in batches, off the request path
        studio.models.start()  # registered models now, then a poll for other processes' changes
        studio.principals.start()  # /v1 drops cached keys when another process changes one
        loop = asyncio.get_running_loop()
        # Batch requests run on this loop, beside online ones: its engines and upstream
        # connections live here.
        studio.batches.run = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result()
        if settings.studio_batch_worker:
            studio.batches.start()
        try:
            yield
        finally:
            # Joined off the loop: the worker may be waiting on a request it runs on this loop.
            await asyncio.to_thread(studio.batches.stop)
            studio.batches.run = asyncio.run
            studio.principals.stop()
            studio.models.stop()
            await studio.aclose()  # upstream health probes and connections
            studio.usage.stop()

    from neocloud.api.fastpath import GatewayApp

    app = GatewayApp(
        lifespan=lifespan,
        title="neocloud",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # install_docs serves it, with its assets, offline
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,  # API keys, not OAuth: no redirect page
    )
    from neocloud.tenancy.service import authenticator

    app.state.ctx = AppContext(settings=settings, db=db, clock=clock, authenticate=authenticator)
    app.state.studio = studio
    from neocloud.api.node_console import DriverConsole
    from neocloud.api.platform import platform_drivers, secret_box, wire_ports

    app.state.secret_box = secret_box(settings)  # seals node credentials (write-only)
    # The API's own drivers (short timeouts): `nodes power` and `nodes inspect` run them now.
    app.state.drivers = platform_drivers(settings, interactive=True)
    app.state.node_console = DriverConsole(app.state.drivers)
    wire_ports(app.state, db)  # compute's prices, tenancy's quota usage and GPU model names
    install_error_handlers(app)

    # The OpenAI-compatible API first: routes are matched in order, and /v1 is the hot path.
    from neocloud.studio.api import router as studio_router

    app.include_router(studio_router, prefix="/v1")
    from neocloud.studio.files_api import router as studio_files_router

    app.include_router(studio_files_router, prefix="/v1")
    from neocloud.studio.batches.api import router as studio_batches_router

    app.include_router(studio_batches_router, prefix="/v1")
    from neocloud.studio.finetuning.api import router as studio_finetuning_router

    app.include_router(studio_finetuning_router, prefix="/v1")

    @app.get(f"{API_PREFIX}/health", tags=["platform"], response_model=HealthOut)
    def health() -> HealthOut:
        """Liveness: answers without authentication."""
        return HealthOut(status="ok", version=__version__)

    install_docs(app, prefix=API_PREFIX, openapi_url=OPENAPI_URL)
    for router in _routers():
        app.include_router(router, prefix=API_PREFIX)
    from neocloud.studio.models_api import router as studio_models_router

    app.include_router(studio_models_router, prefix=API_PREFIX)  # the operator's model registry
    from neocloud.api.boot_seeds import redact_access_log
    from neocloud.api.boot_seeds import router as boot_seeds_router

    app.include_router(boot_seeds_router)  # /boot/seeds/{token}.iso: BMCs mount these
    redact_access_log()
    from neocloud.console.app import install_console

    # The web console at / (pages and /static assets); it calls /api/v1 and /v1 in process.
    install_console(app, box=app.state.secret_box, clock=clock)
    from neocloud.compute.metrics_api import node_busy

    app.state.node_busy = node_busy  # the agent's heartbeat: no active checks on a busy node

    # Outermost first: request id, rate limit, audit (needs the id), body limit + idempotency.
    app.add_middleware(
        BodyLimitAndIdempotencyMiddleware,
        db=db,
        clock=clock,
        # Replays come after authentication, and only to the key that made the request.
        authenticate=lambda token: authenticator(app.state.ctx, token),
        max_body_bytes=settings.max_body_bytes,
        ttl_s=settings.idempotency_ttl_s,
        lease_s=settings.idempotency_lease_s,
        # an upload's body is its file and a little multipart framing
        path_limits={"/v1/files": settings.studio_file_max_bytes + 64 * 1024},
    )
    from neocloud.api.agent_fastpath import AgentHeartbeatFastPath

    # Ordinary agent heartbeats skip the body limit, idempotency and FastAPI (inside the audit).
    app.add_middleware(
        AgentHeartbeatFastPath, state=app.state, max_body_bytes=settings.max_body_bytes
    )
    from neocloud.api.audit import AuditMiddleware

    app.add_middleware(AuditMiddleware, db=db, clock=clock)
    from neocloud.api.ratelimit import ApiRateLimitMiddleware, build_limiter

    limiter, limit = build_limiter(settings)  # per key, before any database work
    app.add_middleware(ApiRateLimitMiddleware, limiter=limiter, limit=limit, clock=clock)
    app.add_middleware(RequestContextMiddleware)
    from neocloud.api.prometheus import install_metrics

    install_metrics(app, db=db, clock=clock, settings=settings)  # /metrics, request latency
    # In front of all of it: ordinary /v1 completions for upstream models skip the stack above.
    app.install_fast_path(studio, max_body_bytes=settings.max_body_bytes)
    return app


def _routers() -> list[APIRouter]:
    # Imported here so that building settings or the CLI does not pull in every context.
    from neocloud.api.economics import router as economics_router
    from neocloud.billing.api import router as billing_router
    from neocloud.compute.api import router as compute_router
    from neocloud.compute.metrics_api import router as compute_metrics_router
    from neocloud.compute.topology_api import router as topology_router
    from neocloud.databases.api import router as databases_router
    from neocloud.fleet.agent_api import router as agent_router
    from neocloud.fleet.api import router as fleet_router
    from neocloud.storage.api import router as storage_router
    from neocloud.studio.api import admin_router as studio_admin_router
    from neocloud.tenancy.api import router as tenancy_router
    from neocloud.tenancy.ssh_keys_api import router as ssh_keys_router

    return [
        tenancy_router,
        ssh_keys_router,
        fleet_router,
        agent_router,
        compute_router,
        compute_metrics_router,
        topology_router,
        databases_router,
        storage_router,
        billing_router,
        economics_router,
        studio_admin_router,
    ]
