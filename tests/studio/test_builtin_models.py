"""The models shipped with neocloud, through the openai client: real generations, offline."""

from __future__ import annotations

import math
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.runtime import StudioRuntime, builtin_catalog

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return builtin_catalog()  # loaded once per module: the engines keep their weights


@pytest.fixture
def oai(  # type: ignore[no-untyped-def]
    settings: Settings, db: Database, clock: VirtualClock, admin_key: str, catalog
) -> Iterator[openai.OpenAI]:
    app = create_app(settings=settings, db=db, clock=clock)
    runtime: StudioRuntime = app.state.studio
    runtime.catalog = catalog
    with TestClient(app) as http:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_tiny_llama_answers_and_counts_tokens(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"neocloud/tiny-llama", "neocloud/tiny-llama-fast"} <= ids
    out = oai.chat.completions.create(
        model="neocloud/tiny-llama",
        messages=[{"role": "user", "content": "Count to five."}],
        temperature=0,
        max_tokens=40,
    )
    assert out.choices[0].message.content == "One, two, three, four, five."
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert out.usage.prompt_tokens == 9  # as the model's tokenizer counts them
    cow = oai.chat.completions.create(
        model="neocloud/tiny-llama-fast",
        messages=[{"role": "user", "content": "What does the cow say?"}],
        temperature=0,
    )
    assert cow.choices[0].message.content == "The cow says moo."
    chunks = list(
        oai.chat.completions.create(
            model="neocloud/tiny-llama",
            messages=[{"role": "user", "content": "Hello!"}],
            temperature=0,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_minilm_embeddings(oai: openai.OpenAI) -> None:
    out = oai.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2",
        input=["a cat sat on the mat", "a kitten sat on a rug", "quarterly revenue grew"],
    )
    a, b, c = (d.embedding for d in out.data)
    assert len(a) == 384
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)

    def cos(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cos(a, b) > cos(a, c) + 0.2
    assert out.usage.prompt_tokens > 0
