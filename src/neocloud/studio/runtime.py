"""The studio's in-process state: the catalog with its engines and the usage buffer."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.studio.catalog import Catalog, CatalogModel, ModelKind
from neocloud.studio.engines.fake import EchoEngine, HashEmbeddingEngine
from neocloud.studio.metering import DbUsageSink, UsageBuffer


@dataclass
class StudioRuntime:
    catalog: Catalog
    usage: UsageBuffer
    clock: Clock


def build_runtime(*, db: Database, clock: Clock) -> StudioRuntime:
    """The default catalog: deterministic built-in engines, metered into ``studio_usage``."""
    catalog = Catalog()
    catalog.add_text_engine(EchoEngine())
    catalog.add_embedding_engine(HashEmbeddingEngine())
    catalog.add(
        CatalogModel(
            id="neocloud/echo",
            engine="echo",
            kind=ModelKind.TEXT,
            context_length=4096,
            input_price_per_m=Decimal("0.01"),
            output_price_per_m=Decimal("0.02"),
        )
    )
    catalog.add(
        CatalogModel(
            id="neocloud/hash-embed",
            engine="hash-embed",
            kind=ModelKind.EMBEDDING,
            context_length=512,
            input_price_per_m=Decimal("0.005"),
        )
    )
    return StudioRuntime(catalog=catalog, usage=UsageBuffer(DbUsageSink(db)), clock=clock)
