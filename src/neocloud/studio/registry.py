"""Models the operator registers at run time: local checkpoints and OpenAI-compatible upstreams.

A registration is a row of ``studio_models``. ``RegisteredModels`` keeps a process's catalog in
step with the table: it applies the rows when the app starts, at once in the process that
served a change (the API calls ``sync()`` after writing), and every ``poll_s`` seconds (5 by
default) for changes made through another process, so every server of a deployment serves a
new model within ``poll_s`` of its registration without a restart.

* ``source="path"``: a local Hugging Face causal-LM directory (it must hold ``config.json``),
  served by the built-in engine (``HFTextEngine``) with the base or the fast config; weights load
  on the first request. The context defaults to the config's ``max_position_embeddings``.
* ``source="upstream"``: the base URLs (``…/v1``) of the replicas of an OpenAI-compatible server
  (vLLM, SGLang), balanced by ``UpstreamPool``; ``upstream_model`` is the name it knows the model
  by (default: the id).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.studio.catalog import Catalog, CatalogModel, Flavor, ModelKind
from neocloud.studio.engines.fasthttp import SUPPORTED_SCHEMES
from neocloud.studio.engines.upstream import UpstreamOptions, UpstreamPool
from neocloud.studio.poller import Poller
from neocloud.studio.pricing import publish_missing, token_prices
from neocloud.studio.tables import StudioModelRow

log = logging.getLogger("neocloud.studio.registry")

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
DEFAULT_UPSTREAM_CONTEXT = 8192
MAX_CONTEXT = 1_048_576


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the operator asks to register; exactly one of ``path`` and ``upstream_urls``."""

    id: str
    path: str | None = None
    upstream_urls: tuple[str, ...] = ()
    upstream_model: str | None = None
    context_length: int | None = None
    # Per 1M tokens. Required (None is refused): a model is never free by omission.
    input_price_per_m: Decimal | None = None
    output_price_per_m: Decimal | None = None
    flavor: Flavor = Flavor.BASE
    deprecated_on: date | None = None


def register_model(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    spec: ModelSpec,
    taken: Collection[str] = (),
) -> StudioModelRow:
    """Store a registration (operator admins). ``taken``: ids served otherwise (built-in)."""
    principal.require_operator(write=True)
    if not MODEL_ID.match(spec.id):
        raise ValidationFailed(
            "a model id is 1-128 letters, digits and . _ : / - (starting with a letter or digit)",
            code="invalid_model_id",
            param="id",
        )
    if spec.id in taken:
        raise Conflict(f"the model {spec.id!r} is built in", code="model_exists", param="id")
    if (spec.path is None) == (not spec.upstream_urls):
        raise ValidationFailed(
            "give either a path or upstream URLs", code="model_source_required", param="path"
        )
    if spec.path is not None:
        context = _checkpoint_context(spec.path, spec.context_length)
        source, path, urls, upstream_model = "path", str(Path(spec.path).resolve()), None, None
    else:
        urls = [_upstream_url(url, i) for i, url in enumerate(spec.upstream_urls)]
        context = spec.context_length or DEFAULT_UPSTREAM_CONTEXT
        source, path, upstream_model = "upstream", None, spec.upstream_model or spec.id
    if not 1 <= context <= MAX_CONTEXT:
        raise ValidationFailed(
            f"context_length must be between 1 and {MAX_CONTEXT}",
            code="invalid_context_length",
            param="context_length",
        )
    input_price, output_price = _prices(spec)
    row = StudioModelRow(
        id=spec.id,
        source=source,
        path=path,
        upstream_urls=urls,
        upstream_model=upstream_model,
        context_length=context,
        input_price_per_m=input_price,
        output_price_per_m=output_price,
        flavor=spec.flavor.value,
        deprecated_on=spec.deprecated_on,
        created_by=principal.user_id,
        created_at=clock.now(),
    )
    try:
        with db.transaction() as session:
            session.add(row)
            session.flush()
    except (IntegrityError, Conflict):
        raise Conflict(
            f"the model {spec.id!r} is already registered", code="model_exists", param="id"
        ) from None
    # Billing prices tokens from the price book: the registration's prices go there too.
    publish_missing(
        db=db,
        clock=clock,
        principal=principal,
        prices=token_prices([catalog_model(row)]),
        replace=True,
    )
    return row


def _prices(spec: ModelSpec) -> tuple[Decimal, Decimal]:
    """The input and output prices per 1M tokens: both stated, neither negative."""
    prices = []
    for name, price in (
        ("input_price_per_m", spec.input_price_per_m),
        ("output_price_per_m", spec.output_price_per_m),
    ):
        if price is None:
            raise ValidationFailed(
                f"{name} is required: state what {spec.id!r} costs per 1M tokens "
                "(input_price_per_m and output_price_per_m; --input-price and --output-price "
                "on the CLI). To serve it free on purpose, give 0 explicitly.",
                code="price_required",
                param=name,
            )
        if price < 0 or not price.is_finite():
            raise ValidationFailed("prices are not negative", code="invalid_price", param=name)
        prices.append(price)
    return prices[0], prices[1]


def _checkpoint_context(path: str, asked: int | None) -> int:
    config_file = Path(path) / "config.json"
    if not Path(path).is_dir() or not config_file.is_file():
        raise ValidationFailed(
            f"{path} is not a Hugging Face checkpoint directory (no config.json in it)",
            code="invalid_model_path",
            param="path",
        )
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError):
        raise ValidationFailed(
            f"{config_file} is not readable JSON", code="invalid_model_path", param="path"
        ) from None
    native = config.get("max_position_embeddings")
    if asked is not None and isinstance(native, int) and asked > native:
        raise ValidationFailed(
            f"context_length {asked} is longer than the model's {native} positions",
            code="invalid_context_length",
            param="context_length",
        )
    return asked or (native if isinstance(native, int) else 2048)


def _upstream_url(url: str, index: int) -> str:
    parts = urlsplit(url.strip())
    served = parts.scheme in SUPPORTED_SCHEMES  # what the gateway's upstream client speaks
    if not served or not parts.hostname or parts.query or parts.fragment:
        raise ValidationFailed(
            f"{url!r} is not an http(s) base URL such as http://10.0.0.5:8000/v1"
            + ("" if served else f" (the gateway cannot serve {parts.scheme or 'no'}:// URLs)"),
            code="invalid_upstream_url",
            param=f"upstream_urls.{index}",
        )
    return url.strip().rstrip("/")


def list_registered(*, db: Database) -> list[StudioModelRow]:
    with db.transaction() as session:
        return list(session.scalars(sa.select(StudioModelRow).order_by(StudioModelRow.id)))


def remove_model(*, db: Database, principal: Principal, model_id: str) -> None:
    """Delete a registration (operator admins); built-in models are not registrations."""
    principal.require_operator(write=True)
    with db.transaction() as session:
        deleted = session.execute(sa.delete(StudioModelRow).where(StudioModelRow.id == model_id))
        if deleted.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(
                f"no registered model {model_id!r}", code="model_not_found", param="model"
            )


def catalog_model(row: StudioModelRow) -> CatalogModel:
    return CatalogModel(
        id=row.id,
        engine=engine_name(row),
        kind=ModelKind.TEXT,
        context_length=row.context_length,
        input_price_per_m=_plain(row.input_price_per_m),
        output_price_per_m=_plain(row.output_price_per_m),
        flavor=Flavor(row.flavor),
        deprecated_on=row.deprecated_on,
        owned_by="operator",
        upstream_model=row.upstream_model,
        created=int(row.created_at.timestamp()),
    )


def _plain(price: Decimal) -> Decimal:
    """0.100000 (NUMERIC(20, 6) on PostgreSQL) as 0.1, the same on both databases."""
    return Decimal(format(price.normalize(), "f"))


def engine_name(row: StudioModelRow) -> str:
    return f"{row.source}:{row.id}"


def _fingerprint(row: StudioModelRow) -> tuple[Any, ...]:
    return (
        row.source,
        row.path,
        tuple(row.upstream_urls or ()),
        row.upstream_model,
        row.context_length,
        row.input_price_per_m,
        row.output_price_per_m,
        row.flavor,
        row.deprecated_on,
    )


class RegisteredModels:
    """Applies ``studio_models`` to the catalog that ``catalog()`` returns (see the module
    docstring). ``catalog`` is asked at each sync: the runtime's catalog may be replaced (a
    test's fake one), and a new catalog object gets every registration applied anew.

    The catalog's dicts are replaced, never changed in place, so request handlers iterating
    them from other threads never see one change size.
    """

    def __init__(
        self,
        db: Database,
        catalog: Callable[[], Catalog],
        *,
        poll_s: float = 5.0,
        upstream_options: UpstreamOptions | None = None,
    ) -> None:
        self.db = db
        # Timeouts and the CA bundle of the upstream pools it builds (from the settings).
        self.upstream_options = upstream_options or UpstreamOptions()
        self.catalog = catalog
        self.poll_s = poll_s
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()
        self._poller = Poller("studio-models", self.sync, poll_s, log)
        # How upstream pools make their HTTP client (tests hand in one on a fake transport).
        self.upstream_client: Callable[[], httpx2.AsyncClient] | None = None

    def sync(self) -> None:
        rows = {row.id: row for row in list_registered(db=self.db)}
        with self._lock:
            catalog = self.catalog()
            if catalog is not self._catalog:  # a new catalog object: apply everything anew
                self._catalog, self._applied = catalog, {}
            wanted = {model_id: _fingerprint(row) for model_id, row in rows.items()}
            gone = [m for m in self._applied if wanted.get(m) != self._applied[m]]
            models = dict(catalog.models)
            text_engines = dict(catalog.text_engines)
            upstreams = dict(catalog.upstreams)
            for model_id in gone:
                models.pop(model_id, None)
                engine = text_engines.pop(f"path:{model_id}", None)
                if engine is not None and hasattr(engine, "close"):
                    engine.close()  # its scheduler thread ends once its live streams finish
                upstreams.pop(f"upstream:{model_id}", None)
                del self._applied[model_id]
            for model_id, row in rows.items():
                if model_id in self._applied:
                    continue
                if row.source == "path":
                    text_engines[engine_name(row)] = _checkpoint_engine(row)
                else:
                    name = engine_name(row)
                    urls = list(row.upstream_urls or ())
                    upstreams[name] = (
                        UpstreamPool(
                            name,
                            urls,
                            client=self.upstream_client(),
                            options=self.upstream_options,
                        )
                        if self.upstream_client is not None
                        else UpstreamPool(name, urls, options=self.upstream_options)
                    )
                models[model_id] = catalog_model(row)
                self._applied[model_id] = wanted[model_id]
            catalog.text_engines = text_engines
            catalog.upstreams = upstreams
            catalog.models = models

    def start(self) -> None:
        """Apply the table now, then poll it in a daemon thread (every ``poll_s``)."""
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()


def _checkpoint_engine(row: StudioModelRow) -> Any:
    from neocloud.studio.engines.hf import BASE_CONFIG, FAST_CONFIG, HFTextEngine

    config = FAST_CONFIG if row.flavor == Flavor.FAST.value else BASE_CONFIG
    assert row.path is not None
    return HFTextEngine(engine_name(row), Path(row.path), config, max_len=row.context_length)
