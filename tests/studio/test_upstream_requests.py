"""The whole OpenAI request reaches an upstream model: tools and tool-call messages, ``n`` > 1,
``response_format``, ``logprobs`` and image parts pass through the gateway to a real fake
upstream server (over the gateway's own HTTP client), driven by the official ``openai`` client;
usage is metered as the upstream counted it (summed over ``n`` choices). The built-in engine
refuses each of them with a 400 naming the param."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.fakeupstream import FakeUpstream
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.runtime import StudioRuntime

from .servers import serve_in_thread

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

MODEL = "meta/llama-3-8b"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, int]]:
    fake = FakeUpstream(name="llama", words=4)
    with serve_in_thread(fake) as port:
        yield fake, port


@pytest.fixture
def oai(
    app: FastAPI, admin_key: str, upstream: tuple[FakeUpstream, int]
) -> Iterator[openai.OpenAI]:
    fake, port = upstream
    fake.seen.clear()
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = MemoryUsageSink()
    runtime.catalog.add_upstream(UpstreamPool("vllm-a", [f"http://127.0.0.1:{port}/v1"]))
    runtime.catalog.add(
        CatalogModel(
            MODEL,
            "vllm-a",
            ModelKind.TEXT,
            8192,
            Decimal("0.1"),
            Decimal("0.2"),
            upstream_model="llama",
        )
    )
    with TestClient(app) as http:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )


def _records(app: FastAPI) -> list[tuple[int, int, bool]]:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.flush()
    sink = runtime.usage.sink
    assert isinstance(sink, MemoryUsageSink)
    return [(r.prompt_tokens, r.completion_tokens, r.aborted) for r in sink.records]


def test_tool_calling_round_trip(
    oai: openai.OpenAI, app: FastAPI, upstream: tuple[FakeUpstream, int]
) -> None:
    fake, _ = upstream
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"asked": "weather in Paris?"}
    assert fake.seen[-1]["tools"] == TOOLS
    assert fake.seen[-1]["tool_choice"] == "auto"
    assert fake.seen[-1]["model"] == "llama"
    # The assistant's call and the tool's answer go back; the model answers from them.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "the tool said: sunny, 21 C"
    sent = fake.seen[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}
    assert len(_records(app)) == 2


def test_tool_call_streams(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert [tc.function.name for tc in calls if tc.function] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_n_choices_are_generated_and_metered_summed(oai: openai.OpenAI, app: FastAPI) -> None:
    out = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], n=2, max_tokens=3
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert all(c.message.content == "hi hi hi" for c in out.choices)
    assert out.usage is not None
    assert out.usage.completion_tokens == 6
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            n=2,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
    assert texts == {0: "hi hi hi", 1: "hi hi hi"}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    prompt = out.usage.prompt_tokens
    assert _records(app) == [(prompt, 6, False), (prompt, 6, False)]
    legacy = oai.completions.create(model=MODEL, prompt="p", n=3, max_tokens=2)
    assert [c.text for c in legacy.choices] == ["hi hi"] * 3


def test_response_format_logprobs_and_images_pass_through(
    oai: openai.OpenAI, upstream: tuple[FakeUpstream, int]
) -> None:
    fake, _ = upstream
    out = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
    )
    assert json.loads(out.choices[0].message.content or "") == {"answer": "hi"}
    assert fake.seen[-1]["response_format"] == {"type": "json_object"}
    assert fake.seen[-1]["top_logprobs"] == 2
    assert out.choices[0].logprobs is not None
    assert out.choices[0].logprobs.content is not None
    assert out.choices[0].logprobs.content[0].token == '{"answer":'
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    parts: Any = [{"type": "text", "text": "what?"}, image]
    seen = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}])
    assert seen.choices[0].message.content == "I see 1 image"
    assert fake.seen[-1]["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    legacy = oai.completions.create(model=MODEL, prompt="p", max_tokens=2, logprobs=1)
    assert legacy.choices[0].logprobs is not None
    assert legacy.choices[0].logprobs.tokens == ["hi", " hi"]


def test_rate_limit_admission_counts_every_choice(oai: openai.OpenAI, app: FastAPI) -> None:
    runtime: StudioRuntime = app.state.studio
    admitted: list[int] = []
    real = runtime.policy.admit

    def spy(caller: Any, limiter: Any, *, tokens: int) -> None:
        admitted.append(tokens)
        real(caller, limiter, tokens=tokens)

    runtime.policy.admit = spy  # type: ignore[method-assign]
    oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], n=4, max_tokens=100
    )
    assert admitted
    assert admitted[0] >= 400


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": TOOLS}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ]
            },
            "messages[1].tool_calls",
        ),
    ],
)
def test_builtin_engine_names_what_it_cannot_do(
    oai: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    args: dict[str, Any] = {
        "model": "neocloud/echo",
        "messages": [{"role": "user", "content": "x"}],
    }
    args.update(kwargs)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(**args)
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == param
    assert "built-in engine" in caught.value.message


def test_builtin_completions_refuse_n_and_logprobs(oai: openai.OpenAI) -> None:
    for kwargs, param in (({"n": 2}, "n"), ({"logprobs": 2}, "logprobs")):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.completions.create(model="neocloud/echo", prompt="x", **kwargs)  # type: ignore[call-overload]
        assert caught.value.param == param


def test_malformed_tool_messages_name_the_param(oai: openai.OpenAI) -> None:
    cases: list[tuple[list[Any], str]] = [
        ([{"role": "tool", "content": "no id"}], "messages"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages.content"),
        ([{"role": "user", "content": [{"type": "audio", "x": 1}]}], "messages.content"),
    ]
    for messages, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(model=MODEL, messages=messages)
        assert caught.value.param == param, caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=129)
    assert caught.value.param == "n"
