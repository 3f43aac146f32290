"""Serving fine-tuned models: the base model's weights, shared, with the job's LoRA adapter.

``with_adapter`` makes a second module tree over the *same* parameter tensors as the loaded
base model (a deep copy whose memo maps every parameter and buffer to itself) and lets ``peft``
add the adapter's LoRA layers to that tree only: the base model keeps serving unchanged, and the
fine-tune costs its adapter's memory, not another copy of the weights. It decodes through
transformers' forward (the batched decoder computes the base projections alone).

A process learns of a fine-tuned model from the database when a request names it
(``FineTunedModels.ensure``): another org's model, a deleted one or one never made is 404
``model_not_found``, so visibility follows the ``studio_ft_models`` table in every process.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool

from neocloud.db.engine import Database
from neocloud.kernel.errors import NotFound
from neocloud.studio.catalog import Catalog, CatalogModel, Flavor, ModelKind
from neocloud.studio.engines.hf import EngineConfig, HFTextEngine, LoadedModel, load_causal_lm
from neocloud.studio.finetuning import service
from neocloud.studio.finetuning.training import quiet_peft
from neocloud.studio.tables import FineTunedModelRow

ADAPTER_CONFIG = EngineConfig(max_batch=4, batch_window_s=0.0, batched_decoder=False)


def fine_tunable(catalog: Catalog) -> dict[str, service.BaseModel]:
    """The catalog's models that can be fine-tuned: base flavors on a local checkpoint."""
    out: dict[str, service.BaseModel] = {}
    for m in catalog.models.values():
        engine = catalog.text_engines.get(m.engine)
        local = isinstance(engine, HFTextEngine) and not isinstance(engine, AdapterEngine)
        if m.kind is ModelKind.TEXT and m.flavor is Flavor.BASE and m.org_id is None and local:
            assert isinstance(engine, HFTextEngine)
            out[m.id] = service.BaseModel(
                m.id, engine.path, m.input_price_per_m, m.output_price_per_m
            )
    return out


def with_adapter(model: Any, adapter: Path) -> Any:
    """``model``'s module tree again, sharing every weight, with ``adapter``'s LoRA applied."""
    from peft import PeftModel

    shared: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    view = copy.deepcopy(model, memo=shared)
    with quiet_peft():
        peft = PeftModel.from_pretrained(view, adapter)
    first = next(model.parameters())
    for name, param in peft.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(device=first.device, dtype=first.dtype)
    adapted: Any = peft.base_model.model
    return adapted.eval()


class AdapterEngine(HFTextEngine):
    """An HF engine whose model is a base checkpoint's shared weights plus one adapter."""

    def __init__(self, name: str, base_path: Path, adapter_path: Path, max_len: int) -> None:
        super().__init__(name, base_path, ADAPTER_CONFIG, max_len=max_len)
        self.adapter_path = adapter_path
        self._adapted: LoadedModel | None = None
        self._base: LoadedModel | None = None  # held: the shared weights live while we serve
        self._lock = threading.Lock()

    @property
    def loaded(self) -> LoadedModel:
        with self._lock:
            if self._adapted is None:
                base = load_causal_lm(self.path)
                model = with_adapter(base.model, self.adapter_path)
                self._base, self._adapted = base, LoadedModel(model, base.tokenizer)
            return self._adapted


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"the model {model_id!r} does not exist or you do not have access to it",
        code="model_not_found",
        param="model",
    )


class FineTunedModels:
    """This process's view of the deployed fine-tunes, kept in the studio's catalog."""

    def __init__(self, db: Database, catalog: Callable[[], Catalog]) -> None:
        self.db = db
        self.catalog = catalog

    async def ensure(self, model_id: str, org_id: str) -> None:
        """Make ``model_id`` servable to ``org_id`` now, or 404 ``model_not_found``."""
        row = await run_in_threadpool(lambda: service.find_model(db=self.db, model_id=model_id))
        if row is None:
            self.forget(model_id)
            raise _not_found(model_id)
        if row.org_id != org_id:
            raise _not_found(model_id)
        catalog = self.catalog()
        if model_id not in catalog.models:
            base = catalog.models.get(row.base_model)
            if base is None:
                raise _not_found(model_id)
            self._add(catalog, row, base)

    def _add(self, catalog: Catalog, row: FineTunedModelRow, base: CatalogModel) -> None:
        engine = AdapterEngine(
            f"ft-{row.id}", Path(row.base_path), Path(row.adapter_path), base.context_length
        )
        catalog.add_text_engine(engine)
        catalog.add(
            CatalogModel(
                id=row.id,
                engine=engine.name,
                kind=ModelKind.TEXT,
                context_length=base.context_length,
                input_price_per_m=base.input_price_per_m,
                output_price_per_m=base.output_price_per_m,
                owned_by=row.org_id,
                created=int(row.created_at.timestamp()),
                org_id=row.org_id,
            )
        )

    def listed(self, org_id: str) -> list[dict[str, Any]]:
        """OpenAI's model objects of ``org_id``'s fine-tunes."""
        return [
            {
                "id": row.id,
                "object": "model",
                "created": int(row.created_at.timestamp()),
                "owned_by": row.org_id,
            }
            for row in service.list_models(db=self.db, org_id=org_id)
        ]

    def forget(self, model_id: str) -> None:
        """Stop serving ``model_id`` in this process (deleted)."""
        catalog = self.catalog()
        model = catalog.models.pop(model_id, None)
        if model is not None:
            engine = catalog.text_engines.pop(model.engine, None)
            if isinstance(engine, HFTextEngine):
                engine.close()
