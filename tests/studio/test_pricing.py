"""The catalog's token prices reach the price book, so an advertised model is never free."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.billing.tables import PriceBookRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.studio.pricing import publish_missing, token_prices
from neocloud.studio.runtime import StudioRuntime

APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
ECHO = {"neocloud/echo": {"input_per_1m": Decimal("1000000"), "output_per_1m": Decimal("0")}}


def _books(db: Database) -> list[PriceBookRow]:
    with db.transaction() as s:
        rows = list(s.scalars(sa.select(PriceBookRow).order_by(PriceBookRow.effective_from)))
        s.expunge_all()
    return rows


def test_the_first_book_carries_the_prices_and_a_second_call_changes_nothing(
    db: Database, clock: VirtualClock
) -> None:
    clock.set(APRIL)
    first = publish_missing(db=db, clock=clock, prices=ECHO)
    assert first is not None
    assert first.token_prices["neocloud/echo"]["input_per_1m"] == "1000000"
    # GPU prices start from the catalog defaults, as any published version does.
    assert first.gpu_prices["H100-SXM-80GB.on_demand"]
    clock.advance(60)
    assert publish_missing(db=db, clock=clock, prices=ECHO) is None
    assert len(_books(db)) == 1


def test_a_new_model_is_added_to_the_version_in_force_not_instead_of_it(
    db: Database, clock: VirtualClock
) -> None:
    clock.set(APRIL)
    publish_missing(db=db, clock=clock, prices=ECHO)
    clock.advance(60)
    other = {"acme/m": {"input_per_1m": Decimal("0.5"), "output_per_1m": Decimal("1.5")}}
    second = publish_missing(db=db, clock=clock, prices=other)
    assert second is not None
    assert set(second.token_prices) == {"neocloud/echo", "acme/m"}
    # Without replace an operator's own price for a model stays; with it the new one wins.
    clock.advance(60)
    cheaper = {"acme/m": {"input_per_1m": Decimal("0.25"), "output_per_1m": Decimal("1.5")}}
    assert publish_missing(db=db, clock=clock, prices=cheaper) is None
    clock.advance(60)
    third = publish_missing(db=db, clock=clock, prices=cheaper, replace=True)
    assert third is not None
    assert third.token_prices["acme/m"]["input_per_1m"] == "0.25"
    assert [len(b.token_prices) for b in _books(db)] == [1, 2, 2]


@pytest.fixture
def http(app: FastAPI, admin_key: str, clock: VirtualClock) -> Iterator[TestClient]:
    clock.set(APRIL)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield client


def test_a_model_registered_with_prices_is_billed_at_them(
    app: FastAPI, http: TestClient, admin_key: str, db: Database, clock: VirtualClock
) -> None:
    """Register the shipped tiny-llama checkpoint under another id at $1,000,000 per 1M input
    tokens; one chat later the invoice preview charges exactly its prompt tokens."""
    from neocloud.studio.runtime import TINY_LLAMA

    body = {
        "id": "acme/tiny",
        "path": str(TINY_LLAMA),
        "input_price_per_m": "1000000",
        "output_price_per_m": "0",
    }
    assert http.post("/api/v1/studio/models", json=body).status_code == 201
    oai = openai.OpenAI(
        base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
    )
    out = oai.chat.completions.create(
        model="acme/tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=2
    )
    assert out.usage is not None
    runtime: StudioRuntime = app.state.studio
    assert runtime.usage.flush() == 1
    org = http.get("/api/v1/orgs").json()["data"][0]["id"]
    preview = http.get("/api/v1/invoices/preview", params={"org_id": org, "period": "2026-04"})
    lines = [(t["model"], t["amount"]["amount"]) for t in preview.json()["token_lines"]]
    assert lines == [("acme/tiny", f"{out.usage.prompt_tokens}.00")]


def test_token_prices_are_the_catalog_prices() -> None:
    from neocloud.studio.engines.fake import fake_catalog

    prices = token_prices(fake_catalog().models.values())
    echo = fake_catalog().models["neocloud/echo"]
    assert prices["neocloud/echo"]["input_per_1m"] == echo.input_price_per_m
    assert prices["neocloud/echo"]["output_per_1m"] == echo.output_price_per_m


def test_a_platform_first_start_prices_the_built_in_models(tmp_path: Path) -> None:
    """``neocloud up``'s preparation: the demo's tokens are billable from the first request."""
    from neocloud.api.platform import prepare
    from neocloud.kernel.settings import load_settings
    from neocloud.studio.runtime import builtin_catalog

    clock = VirtualClock(APRIL)
    prepared = prepare(load_settings(data_dir=tmp_path), clock, demo_fleet=False)
    books = _books(prepared.db)
    assert len(books) == 1
    catalog = builtin_catalog()
    # every model's tokens, and training the fine-tunable ones (per 1M trained tokens)
    trainable = {f"{m}:fine-tuning" for m in ("neocloud/tiny-llama",) if m in catalog.models}
    assert set(books[0].token_prices) == set(catalog.models) | trainable
    assert "neocloud/tiny-llama" in books[0].token_prices
    assert books[0].token_prices["neocloud/tiny-llama:fine-tuning"]["input_per_1m"] == "0.50"
    prepare(load_settings(data_dir=tmp_path), clock, demo_fleet=False)  # a restart
    assert len(_books(prepared.db)) == 1
