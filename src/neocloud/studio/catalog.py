"""The model catalog: what can be called, on which engine, at what price per token.

A model is listed by ``/v1/models`` only when its engine is registered and it is not past its
deprecation date. ``fast`` flavors are the same weights on a latency-tuned engine config, priced
higher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from neocloud.kernel.errors import NotFound
from neocloud.studio.engines.base import EmbeddingEngine, TextEngine
from neocloud.studio.engines.upstream import UpstreamPool


class Flavor(StrEnum):
    BASE = "base"
    FAST = "fast"


class ModelKind(StrEnum):
    TEXT = "text"
    EMBEDDING = "embedding"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One sellable model. Prices are per 1M tokens, in the platform currency."""

    id: str
    engine: str
    kind: ModelKind
    context_length: int
    input_price_per_m: Decimal
    output_price_per_m: Decimal = Decimal(0)
    flavor: Flavor = Flavor.BASE
    deprecated_on: date | None = None
    owned_by: str = "neocloud"
    upstream_model: str | None = None  # the name an upstream engine knows the model by
    created: int = 1_764_288_000  # 2025-11-28, the catalog's epoch for models without a date
    org_id: str | None = None  # a fine-tuned model: served to this org only

    def is_deprecated(self, today: date) -> bool:
        return self.deprecated_on is not None and today >= self.deprecated_on


@dataclass
class Catalog:
    """Models and the engines that serve them, keyed by engine name."""

    models: dict[str, CatalogModel] = field(default_factory=dict)
    text_engines: dict[str, TextEngine] = field(default_factory=dict)
    embedding_engines: dict[str, EmbeddingEngine] = field(default_factory=dict)
    upstreams: dict[str, UpstreamPool] = field(default_factory=dict)

    def add(self, model: CatalogModel) -> None:
        self.models[model.id] = model

    def add_text_engine(self, engine: TextEngine) -> None:
        self.text_engines[engine.name] = engine

    def add_embedding_engine(self, engine: EmbeddingEngine) -> None:
        self.embedding_engines[engine.name] = engine

    def add_upstream(self, pool: UpstreamPool) -> None:
        self.upstreams[pool.name] = pool

    def is_servable(self, model: CatalogModel, now: datetime) -> bool:
        engines: dict[str, object] = (
            {**self.text_engines, **self.upstreams}
            if model.kind is ModelKind.TEXT
            else dict(self.embedding_engines)
        )
        return model.engine in engines and not model.is_deprecated(now.date())

    def servable(self, now: datetime) -> list[CatalogModel]:
        """Models that can answer a request now, sorted by id: not an upstream model whose
        every replica is down (a request for one still answers 503, to be retried, not 404)."""
        return sorted(
            (
                m
                for m in self.models.values()
                if self.is_servable(m, now) and self._has_live_replica(m)
            ),
            key=lambda m: m.id,
        )

    def _has_live_replica(self, model: CatalogModel) -> bool:
        pool = self.upstreams.get(model.engine)
        return pool is None or bool(pool.available())

    def get_servable(self, model_id: str, kind: ModelKind, now: datetime) -> CatalogModel:
        """The model, or 404 ``model_not_found`` (also when it serves another kind of request)."""
        model = self.models.get(model_id)
        if model is None or model.kind is not kind or not self.is_servable(model, now):
            raise NotFound(
                f"the model {model_id!r} does not exist or you do not have access to it",
                code="model_not_found",
                param="model",
            )
        return model

    def text_engine(self, model: CatalogModel) -> TextEngine:
        return self.text_engines[model.engine]

    def embedding_engine(self, model: CatalogModel) -> EmbeddingEngine:
        return self.embedding_engines[model.engine]
