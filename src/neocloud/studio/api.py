"""The OpenAI-compatible router, mounted at ``/v1``: models, chat, completions, embeddings.

Shapes follow OpenAI's wire format exactly, streaming included: with
``stream_options.include_usage`` every chunk carries ``usage: null`` except a last chunk with
``choices: []`` and the usage, then ``data: [DONE]``. Each request leaves one usage record in
the metering buffer, also when the client aborts a stream (with the tokens sent so far).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from neocloud.kernel.auth import Principal
from neocloud.kernel.errors import InvalidRequest
from neocloud.studio import admin_api
from neocloud.studio.auth import StudioCaller
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.base import ChatMessage, Piece, Sampling, TextEngine
from neocloud.studio.metering import UsageRecord, request_ids
from neocloud.studio.proxy import proxy
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.schemas import (
    ChatCompletionOut,
    ChatCompletionRequest,
    CompletionOut,
    CompletionRequest,
    EmbeddingListOut,
    EmbeddingRequest,
    ModelListOut,
    ModelOut,
    load_json,
    parse,
)
from neocloud.web.schemas import ErrorOut

# What every /v1 route can answer besides its success, in OpenAI's error shape (the same as the
# platform's): a bad body or value is a 400 naming `param` (OpenAI's status, not 422).
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON or a value is invalid"},
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key may not use the studio"},
    404: {"model": ErrorOut, "description": "No such model, or not one the caller may use"},
    413: {"model": ErrorOut, "description": "The body is larger than the bound"},
    429: {
        "model": ErrorOut,
        "description": "Rate limit (`rate_limit_exceeded`, with `Retry-After`) or budget "
        "(`insufficient_quota`)",
    },
    500: {"model": ErrorOut, "description": "An internal error; it has been logged"},
    503: {"model": ErrorOut, "description": "No replica of the model is up; retry later"},
}
# A model served by an upstream engine answers the upstream's own error status and body.
_PROXIED_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    "default": {"model": ErrorOut, "description": "An upstream engine's error, passed through"},
}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that the route reads and validates itself (so that
    a bad one is OpenAI's 400, not FastAPI's 422)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def _streaming(model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a generation: JSON, or with ``stream: true`` server-sent events."""
    return {
        200: {
            "model": model,
            "description": f"The {what} (`stream: false`), or with `stream: true` server-sent "
            "events: `data: <chunk JSON>` frames, then `data: [DONE]`",
            "content": {
                "text/event-stream": {
                    "schema": {  # one server-sent event
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "string",
                                "description": "A chunk object as JSON, or `[DONE]` last",
                            }
                        },
                    }
                }
            },
        }
    }


router = APIRouter(tags=["studio"])
# The studio's settings and usage under /api/v1 (platform conventions) live in admin_api; the
# app mounts them from here.
admin_router = admin_api.admin_router


def _runtime(request: Request) -> StudioRuntime:
    runtime: StudioRuntime = request.app.state.studio
    return runtime


async def _body(request: Request) -> Any:
    return load_json(await request.body())  # 400 on bad JSON or too deep a nesting


@router.get(
    "/models",
    response_model=None,
    responses={**_ERRORS, 200: {"model": ModelListOut, "description": "The servable models"}},
)
async def list_models(request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Models that can be served now."""
    runtime = _runtime(request)
    models = [m for m in runtime.catalog.servable(runtime.clock.now()) if m.org_id is None]
    data: list[dict[str, Any]] = [_model_out(m) for m in models]
    # the caller's org's fine-tunes (read from the database: visible in every process at once)
    data += await run_in_threadpool(runtime.finetunes.listed, caller.org_id)
    return {"object": "list", "data": data}


@router.get(
    "/models/{model_id:path}",
    response_model=None,
    responses={**_ERRORS, 200: {"model": ModelOut, "description": "The model"}},
)
async def get_model(model_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    runtime = _runtime(request)
    now = runtime.clock.now()
    await _ensure(runtime, caller, model_id)
    for kind in ModelKind:
        if (m := runtime.catalog.models.get(model_id)) is not None and m.kind is kind:
            return _model_out(runtime.catalog.get_servable(model_id, kind, now))
    return _model_out(runtime.catalog.get_servable(model_id, ModelKind.TEXT, now))


async def _ensure(runtime: StudioRuntime, caller: Principal, model_id: Any) -> None:
    """A fine-tuned model (``ft:…``) is served to its org only: known to this process from
    the database on the first request naming it; anyone else's (or a deleted one) is 404."""
    if isinstance(model_id, str) and model_id.startswith("ft:"):
        await runtime.finetunes.ensure(model_id, caller.org_id)


def _model_out(m: CatalogModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "context_length": m.context_length,
        "flavor": m.flavor.value,
        "pricing": {
            "input_per_m_tokens": str(m.input_price_per_m),
            "output_per_m_tokens": str(m.output_price_per_m),
        },
        "deprecated_on": m.deprecated_on.isoformat() if m.deprecated_on else None,
    }


@dataclass
class _Generation:
    """One validated generation request, ready for the engine."""

    runtime: StudioRuntime
    caller: Principal
    model: CatalogModel
    engine: TextEngine
    prompt_ids: list[int]
    sampling: Sampling
    endpoint: str
    request_id: str
    created: int

    def record(self, completion_tokens: int, *, aborted: bool) -> None:
        self.runtime.usage.record(
            UsageRecord(
                request_id=self.request_id,
                org_id=self.caller.org_id,
                key_id=self.caller.key_id,
                model=self.model.id,
                endpoint=self.endpoint,
                prompt_tokens=len(self.prompt_ids),
                completion_tokens=completion_tokens,
                aborted=aborted,
                created_at=self.runtime.clock.now(),
            )
        )

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = len(self.prompt_ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }


def _prepare(
    runtime: StudioRuntime,
    caller: Principal,
    req: ChatCompletionRequest | CompletionRequest,
    prompt: str | None,
    *,
    endpoint: str,
    prefix: str,
) -> _Generation:
    runtime.online.note()  # batches yield to online traffic
    model = runtime.catalog.get_servable(req.model, ModelKind.TEXT, runtime.clock.now())
    engine = runtime.catalog.text_engine(model)
    if prompt is None:
        assert isinstance(req, ChatCompletionRequest)
        prompt = engine.render_chat([ChatMessage(m.role, m.text()) for m in req.messages])
    prompt_ids = engine.encode(prompt)
    limit = req.token_limit
    room = model.context_length - len(prompt_ids)
    param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
    if room <= 0 or (limit is not None and limit > room):
        asked = len(prompt_ids) + (limit or 0)
        raise InvalidRequest(
            f"This model's maximum context length is {model.context_length} tokens. However, "
            f"you requested {asked} tokens ({len(prompt_ids)} in the {param}, {limit or 0} in "
            "the completion). Please reduce the length of the prompt or completion.",
            code="context_length_exceeded",
            param=param,
        )
    runtime.policy.admit(caller, runtime.limiter, tokens=len(prompt_ids) + (limit or room))
    sampling = Sampling(
        max_tokens=limit or room,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stops(),
        seed=req.seed,
    )
    return _Generation(
        runtime=runtime,
        caller=caller,
        model=model,
        engine=engine,
        prompt_ids=prompt_ids,
        sampling=sampling,
        endpoint=endpoint,
        request_id=request_ids.new(prefix),
        created=int(runtime.clock.now().timestamp()),
    )


def _refuse_unsupported(
    req: ChatCompletionRequest | CompletionRequest, model: CatalogModel
) -> None:
    """The built-in engine generates one plain-text choice: a request for more (tools, n > 1,
    a response format, logprobs, images) is a 400 naming the param, never silently ignored."""
    param = req.unsupported()
    if param is not None:
        raise InvalidRequest(
            f"{param}: {model.id} runs on the built-in engine, which does not support it "
            "(models served by an upstream engine do)",
            code="unsupported_parameter",
            param=param,
        )


async def _collect(gen: _Generation) -> tuple[str, int, str]:
    text, tokens, finish = "", 0, "length"
    try:
        async for piece in gen.engine.stream(gen.prompt_ids, gen.sampling):
            text += piece.text
            tokens += piece.tokens
            if piece.finish_reason is not None:
                finish = piece.finish_reason
    except BaseException:
        gen.record(tokens, aborted=True)
        raise
    gen.record(tokens, aborted=False)
    return text, tokens, finish


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _stream(
    gen: _Generation, include_usage: bool, chunk: Any, opening: dict[str, Any] | None
) -> AsyncIterator[str]:
    """SSE frames; ``chunk(text, finish)`` builds one chunk's ``choices``.

    The usage record is written in ``finally``: when the client goes away the generator is
    closed mid-stream and the tokens sent so far are still metered.
    """
    tokens, done = 0, False

    def frame(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "id": gen.request_id,
            "object": "chat.completion.chunk"
            if gen.endpoint == "chat.completions"
            else ("text_completion"),
            "created": gen.created,
            "model": gen.model.id,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return _sse(body)

    try:
        if opening is not None:
            yield frame([opening])
        piece: Piece
        async for piece in gen.engine.stream(gen.prompt_ids, gen.sampling):
            tokens += piece.tokens
            if piece.text:
                yield frame([chunk(piece.text, None)])
            if piece.finish_reason is not None:
                yield frame([chunk(None, piece.finish_reason)])
                break
        if include_usage:
            yield frame([], gen.usage(tokens))
        yield "data: [DONE]\n\n"
        done = True
    finally:
        gen.record(tokens, aborted=not done)


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    "/chat/completions",
    response_model=None,
    responses={**_PROXIED_ERRORS, **_streaming(ChatCompletionOut, "chat completion")},
    openapi_extra=_json_body(ChatCompletionRequest),
)
async def create_chat_completion(
    request: Request, caller: StudioCaller
) -> JSONResponse | StreamingResponse:
    runtime = _runtime(request)
    body = await _body(request)
    req: ChatCompletionRequest = parse(ChatCompletionRequest, body)
    await _ensure(runtime, caller, req.model)
    model = runtime.catalog.get_servable(req.model, ModelKind.TEXT, runtime.clock.now())
    if model.engine in runtime.catalog.upstreams:
        return await proxy(
            runtime, caller, model, body, req, path="/chat/completions", endpoint="chat.completions"
        )
    _refuse_unsupported(req, model)
    gen = _prepare(runtime, caller, req, None, endpoint="chat.completions", prefix="chatcmpl")
    if req.stream:

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        opening = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return StreamingResponse(
            _stream(gen, req.include_usage, chunk, opening),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    text, tokens, finish = await _collect(gen)
    return JSONResponse(
        {
            "id": gen.request_id,
            "object": "chat.completion",
            "created": gen.created,
            "model": gen.model.id,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": gen.usage(tokens),
        }
    )


@router.post(
    "/completions",
    response_model=None,
    responses={**_PROXIED_ERRORS, **_streaming(CompletionOut, "completion")},
    openapi_extra=_json_body(CompletionRequest),
)
async def create_completion(
    request: Request, caller: StudioCaller
) -> JSONResponse | StreamingResponse:
    runtime = _runtime(request)
    body = await _body(request)
    req: CompletionRequest = parse(CompletionRequest, body)
    await _ensure(runtime, caller, req.model)
    model = runtime.catalog.get_servable(req.model, ModelKind.TEXT, runtime.clock.now())
    if model.engine in runtime.catalog.upstreams:
        return await proxy(
            runtime, caller, model, body, req, path="/completions", endpoint="completions"
        )
    _refuse_unsupported(req, model)
    gen = _prepare(runtime, caller, req, req.prompt_text(), endpoint="completions", prefix="cmpl")
    if req.stream:

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}

        return StreamingResponse(
            _stream(gen, req.include_usage, chunk, None),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    text, tokens, finish = await _collect(gen)
    return JSONResponse(
        {
            "id": gen.request_id,
            "object": "text_completion",
            "created": gen.created,
            "model": gen.model.id,
            "system_fingerprint": None,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": gen.usage(tokens),
        }
    )


@router.post(
    "/embeddings",
    response_model=None,
    responses={**_ERRORS, 200: {"model": EmbeddingListOut, "description": "The embeddings"}},
    openapi_extra=_json_body(EmbeddingRequest),
)
async def create_embeddings(request: Request, caller: StudioCaller) -> JSONResponse:
    runtime = _runtime(request)
    runtime.online.note()
    req: EmbeddingRequest = parse(EmbeddingRequest, await _body(request))
    now = runtime.clock.now()
    model = runtime.catalog.get_servable(req.model, ModelKind.EMBEDDING, now)
    engine = runtime.catalog.embedding_engine(model)
    if req.dimensions is not None and req.dimensions != engine.dims:
        raise InvalidRequest(
            f"dimensions: {model.id} embeds into {engine.dims} dimensions only",
            code="invalid_value",
            param="dimensions",
        )
    texts = req.texts()
    counts = [engine.count_tokens(text) for text in texts]
    for i, count in enumerate(counts):
        if count > model.context_length:
            raise InvalidRequest(
                f"input[{i}] is longer than the model's {model.context_length} tokens",
                code="context_length_exceeded",
                param="input",
            )
    runtime.policy.admit(caller, runtime.limiter, tokens=sum(counts))
    result = await engine.embed(texts)
    runtime.usage.record(
        UsageRecord(
            request_id=request_ids.new("emb"),
            org_id=caller.org_id,
            key_id=caller.key_id,
            model=model.id,
            endpoint="embeddings",
            prompt_tokens=result.prompt_tokens,
            completion_tokens=0,
            aborted=False,
            created_at=now,
        )
    )
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vec, req.encoding_format)}
        for i, vec in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"object": "list", "data": data, "model": model.id, "usage": usage})


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
