"""The official ``openai`` client against the ``/v1`` API, unchanged: shapes, streams, errors."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.db.engine import Database
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import StudioUsageRow


@pytest.fixture
def oai(app: FastAPI, admin_key: str) -> Iterator[openai.OpenAI]:
    with TestClient(app, raise_server_exceptions=False) as http:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )


def _runtime(app: FastAPI) -> StudioRuntime:
    runtime: StudioRuntime = app.state.studio
    return runtime


def test_models_lists_what_can_be_served(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == ["neocloud/echo", "neocloud/hash-embed"]
    assert oai.models.retrieve("neocloud/echo").owned_by == "neocloud"


def test_chat_completion(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model="neocloud/echo",
        messages=[{"role": "user", "content": "hello tiny world"}],
        max_tokens=5,
    )
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello tiny world hello tiny"
    assert choice.finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_stop_sequence_ends_with_stop(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model="neocloud/echo",
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=10,
        stop=["three"],
    )
    assert out.choices[0].message.content == "one two "
    assert out.choices[0].finish_reason == "stop"


def test_chat_stream_with_include_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="neocloud/echo",
            messages=[{"role": "user", "content": "a b c"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    *body, last = chunks
    assert all(c.usage is None for c in body)
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in body if c.choices)
    assert text == "a b c a"
    assert body[-1].choices[0].finish_reason == "length"


def test_stream_without_include_usage_has_no_usage_key(app: FastAPI, admin_key: str) -> None:
    with TestClient(app) as http:
        r = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {admin_key}"},
            json={
                "model": "neocloud/echo",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 2,
                "stream": True,
            },
        )
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [line for line in r.text.split("\n\n") if line]
    assert frames[-1] == "data: [DONE]"
    assert all('"usage"' not in f for f in frames)


def test_completions(oai: openai.OpenAI) -> None:
    out = oai.completions.create(model="neocloud/echo", prompt="to be or not", max_tokens=3)
    assert out.object == "text_completion"
    assert out.choices[0].text == "to be or"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4, 3)
    streamed = list(
        oai.completions.create(model="neocloud/echo", prompt="to be", max_tokens=3, stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed) == "to be to"


def test_embeddings_float_and_base64(oai: openai.OpenAI) -> None:
    # The client asks for base64 unless told otherwise and decodes it.
    out = oai.embeddings.create(model="neocloud/hash-embed", input=["hello world", "bye"])
    assert [d.index for d in out.data] == [0, 1]
    assert len(out.data[0].embedding) == 384
    floats = oai.embeddings.create(
        model="neocloud/hash-embed", input="hello world", encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(out.data[0].embedding, abs=1e-6)
    assert out.usage.prompt_tokens == 3


def test_unknown_model_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="neocloud/echo", input="x")  # a text model cannot embed


def test_context_length_exceeded(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="neocloud/echo",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=100_000,
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.role"),
    ],
)
def test_invalid_parameters_name_the_param(
    oai: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    args: dict[str, object] = {
        "model": "neocloud/echo",
        "messages": [{"role": "user", "content": "x"}],
    }
    args.update(kwargs)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(**args)  # type: ignore[call-overload]
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_bad_or_missing_key_is_401(app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as http:
        bad = openai.OpenAI(
            base_url="http://testserver/v1", api_key="nck_wrong", http_client=http, max_retries=0
        )
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        assert http.get("/v1/models").json()["error"]["type"] == "authentication_error"


def test_each_request_is_metered_in_batches(oai: openai.OpenAI, app: FastAPI, db: Database) -> None:
    oai.chat.completions.create(
        model="neocloud/echo", messages=[{"role": "user", "content": "a b"}], max_tokens=3
    )
    list(oai.completions.create(model="neocloud/echo", prompt="p q", max_tokens=2, stream=True))
    oai.embeddings.create(model="neocloud/hash-embed", input="one two")
    runtime = _runtime(app)
    assert runtime.usage.flush() == 3
    with db.transaction() as s:
        rows = s.scalars(sa.select(StudioUsageRow).order_by(StudioUsageRow.id)).all()
        got = [(r.endpoint, r.prompt_tokens, r.completion_tokens, r.aborted) for r in rows]
    assert sorted(got) == [
        ("chat.completions", 4, 3, False),
        ("completions", 2, 2, False),
        ("embeddings", 2, 0, False),
    ]
