"""One request of a batch, run like its online twin but without HTTP, rate limits or the online
usage buffer: the same validation (a 400 naming the param), the same engines and upstreams.
Answers the status, the body OpenAI's endpoint would have answered, and the tokens counted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from neocloud.kernel.errors import InvalidRequest, NeocloudError
from neocloud.studio.catalog import Catalog, CatalogModel, ModelKind
from neocloud.studio.engines.base import ChatMessage, Sampling
from neocloud.studio.schemas import ChatCompletionRequest, EmbeddingRequest, parse


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    model: str | None = None  # the model that ran (None: refused before it ran)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def error_body(exc: NeocloudError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def outcome_message(index: int, out: Outcome) -> dict[str, Any]:
    """``out`` as the JSON line a batch run on a node prints (``batches/remote.py``)."""
    return {
        "kind": "outcome",
        "index": index,
        "status": out.status_code,
        "body": out.body,
        "model": out.model,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
    }


def outcome_of(message: dict[str, Any]) -> Outcome:
    """The ``Outcome`` of an ``outcome_message`` line."""
    return Outcome(
        int(message["status"]),
        message["body"],
        message["model"],
        int(message["prompt_tokens"]),
        int(message["completion_tokens"]),
    )


async def execute(
    catalog: Catalog, now: datetime, endpoint: str, body: Any, request_id: str
) -> Outcome:
    try:
        if endpoint == "/v1/embeddings":
            return await _embed(catalog, now, body)
        return await _chat(catalog, now, body, request_id)
    except NeocloudError as exc:
        return Outcome(exc.status, error_body(exc))


async def _chat(catalog: Catalog, now: datetime, body: Any, request_id: str) -> Outcome:
    req: ChatCompletionRequest = parse(ChatCompletionRequest, body)
    if req.stream:
        raise InvalidRequest(
            "stream: a batch request cannot stream", code="invalid_value", param="stream"
        )
    model = catalog.get_servable(req.model, ModelKind.TEXT, now)
    pool = catalog.upstreams.get(model.engine)
    if pool is not None:
        status, data = await pool.post_json(
            "/chat/completions", {**body, "model": model.upstream_model or model.id}
        )
        if status >= 400:
            return Outcome(status, data if isinstance(data, dict) else {"error": data})
        data["model"] = model.id
        usage = data.get("usage") or {}
        return Outcome(
            status,
            data,
            model.id,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )
    param = req.unsupported()
    if param is not None:
        raise InvalidRequest(
            f"{param}: {model.id} runs on the built-in engine, which does not support it",
            code="unsupported_parameter",
            param=param,
        )
    return await _builtin_chat(catalog, model, req, request_id, now)


async def _builtin_chat(
    catalog: Catalog,
    model: CatalogModel,
    req: ChatCompletionRequest,
    request_id: str,
    now: datetime,
) -> Outcome:
    engine = catalog.text_engine(model)
    prompt_ids = engine.encode(
        engine.render_chat([ChatMessage(m.role, m.text()) for m in req.messages])
    )
    limit = req.token_limit
    room = model.context_length - len(prompt_ids)
    if room <= 0 or (limit is not None and limit > room):
        raise InvalidRequest(
            f"This model's maximum context length is {model.context_length} tokens; the "
            f"messages take {len(prompt_ids)} and {limit or 0} were asked for the completion",
            code="context_length_exceeded",
            param="messages",
        )
    sampling = Sampling(
        max_tokens=limit or room,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stops(),
        seed=req.seed,
    )
    text, tokens, finish = "", 0, "length"
    async for piece in engine.stream(prompt_ids, sampling):
        text += piece.text
        tokens += piece.tokens
        if piece.finish_reason is not None:
            finish = piece.finish_reason
    prompt = len(prompt_ids)
    out = {
        "id": request_id.replace("batch_req_", "chatcmpl-", 1),
        "object": "chat.completion",
        "created": int(now.timestamp()),
        "model": model.id,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        },
    }
    return Outcome(200, out, model.id, prompt, tokens)


async def _embed(catalog: Catalog, now: datetime, body: Any) -> Outcome:
    req: EmbeddingRequest = parse(EmbeddingRequest, body)
    model = catalog.get_servable(req.model, ModelKind.EMBEDDING, now)
    engine = catalog.embedding_engine(model)
    if req.dimensions is not None and req.dimensions != engine.dims:
        raise InvalidRequest(
            f"dimensions: {model.id} embeds into {engine.dims} dimensions only",
            code="invalid_value",
            param="dimensions",
        )
    texts = req.texts()
    for i, text in enumerate(texts):
        if engine.count_tokens(text) > model.context_length:
            raise InvalidRequest(
                f"input[{i}] is longer than the model's {model.context_length} tokens",
                code="context_length_exceeded",
                param="input",
            )
    result = await engine.embed(texts)
    data = [
        {"object": "embedding", "index": i, "embedding": vec}
        for i, vec in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    out = {"object": "list", "data": data, "model": model.id, "usage": usage}
    return Outcome(200, out, model.id, result.prompt_tokens, 0)
