"""Keep the price book in step with the catalog's token prices.

Billing prices tokens from the price book only (rating is a pure function of the facts and the
book), while the studio shows each model's price in its catalog. A model the book does not
price would be served for free, so whenever the studio learns prices the book lacks (the
built-in models on a platform's first start, a model an operator registers with prices) it
publishes a new book version, effective now, that carries the version in force and adds them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal

from neocloud.billing import service as billing
from neocloud.billing.tables import PriceBookRow
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict
from neocloud.studio.catalog import CatalogModel

log = logging.getLogger("neocloud.studio.pricing")

# Who publishes the first book on a platform's first start (no API key is involved).
PLATFORM = Principal(
    key_id="platform", user_id="platform", org_id="platform", role=Role.OWNER, is_operator=True
)
BATCH_DISCOUNT = Decimal("0.5")


def token_prices(models: Iterable[CatalogModel]) -> dict[str, dict[str, Decimal]]:
    """The price-book entries of ``models``: per 1M input and output tokens."""
    return {
        m.id: {
            "input_per_1m": m.input_price_per_m,
            "output_per_1m": m.output_price_per_m,
            "batch_discount": BATCH_DISCOUNT,
        }
        for m in models
    }


def publish_missing(
    *,
    db: Database,
    clock: Clock,
    prices: Mapping[str, Mapping[str, Decimal]],
    principal: Principal = PLATFORM,
    replace: bool = False,
) -> PriceBookRow | None:
    """Publish a version that adds ``prices`` to the one in force (``replace``: also overwrite
    the entries it already has). ``None`` when the book already says it all."""
    now = clock.now()
    with db.transaction() as s:
        current = billing.find_price_book_row(s, now)
        gpu = billing.canonical_gpu_prices(current.gpu_prices) if current else {}
        tokens = dict(current.token_prices) if current else {}
    given = {model: {k: str(v) for k, v in p.items()} for model, p in prices.items()}
    wanted = {
        model: p
        for model, p in given.items()
        if model not in tokens or (replace and tokens[model] != p)
    }
    if not wanted:
        return None
    merged = {m: {k: Decimal(v) for k, v in p.items()} for m, p in {**tokens, **wanted}.items()}
    try:
        return billing.publish_price_book(
            db=db,
            clock=clock,
            principal=principal,
            effective_from=None,  # now as publishing reads it: a real clock has moved on
            gpu_prices={code: Decimal(p) for code, p in gpu.items()},
            token_prices=merged,
            note="token prices of the studio catalog: " + ", ".join(sorted(wanted)),
        )
    except Conflict:
        # A version already takes effect at this very instant: leave the book as it is.
        log.warning("a price book already takes effect at %s; token prices not added", now)
        return None
