"""Requests for models on upstream engines: passed through, rewritten, metered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from neocloud.kernel.auth import Principal
from neocloud.studio.catalog import CatalogModel
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.studio.metering import UsageRecord, request_ids
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.schemas import ChatCompletionRequest, CompletionRequest

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


IMAGE_TOKENS_ESTIMATE = 1000  # an image part before the upstream has counted it


def _estimate_prompt_tokens(
    body: dict[str, Any], req: ChatCompletionRequest | CompletionRequest
) -> int:
    """Before the upstream has counted: about four characters per token of text and tool
    definitions, and a flat guess per image (a data: URL's length says nothing of its tokens)."""
    if isinstance(req, CompletionRequest):
        return max(1, len(json.dumps(body.get("prompt", ""))) // 4)
    chars, images = len(json.dumps(body.get("tools") or [])), 0
    for m in req.messages:
        chars += len(m.text()) + 8
        if m.tool_calls:
            chars += sum(len(c.function.name) + len(c.function.arguments) for c in m.tool_calls)
        if isinstance(m.content, list):
            images += sum(1 for p in m.content if p.type == "image_url")
    return max(1, chars // 4) + images * IMAGE_TOKENS_ESTIMATE


async def proxy(
    runtime: StudioRuntime,
    caller: Principal,
    model: CatalogModel,
    body: dict[str, Any],
    req: ChatCompletionRequest | CompletionRequest,
    *,
    path: str,
    endpoint: str,
) -> JSONResponse | StreamingResponse:
    pool: UpstreamPool = runtime.catalog.upstreams[model.engine]
    runtime.online.note()  # batches yield to online traffic
    estimate = _estimate_prompt_tokens(body, req)
    # n choices each up to the token limit; the upstream's usage sums them and is what is metered.
    runtime.policy.admit(caller, runtime.limiter, tokens=estimate + (req.token_limit or 0) * req.n)
    request_id = request_ids.new("chatcmpl" if endpoint == "chat.completions" else "cmpl")

    def record(prompt: int, completion: int, *, aborted: bool) -> None:
        runtime.usage.record(
            UsageRecord(
                request_id=request_id,
                org_id=caller.org_id,
                key_id=caller.key_id,
                model=model.id,
                endpoint=endpoint,
                prompt_tokens=prompt,
                completion_tokens=completion,
                aborted=aborted,
                created_at=runtime.clock.now(),
            )
        )

    payload = {**body, "model": model.upstream_model or model.id}
    if not req.stream:
        status, data = await pool.post_json(path, payload)
        if status >= 400:
            return JSONResponse(data, status_code=status)
        data["model"] = model.id
        usage = data.get("usage") or {}
        record(
            usage.get("prompt_tokens", estimate), usage.get("completion_tokens", 0), aborted=False
        )
        return JSONResponse(data)

    payload["stream_options"] = {"include_usage": True}
    batches = pool.stream_data(path, payload)
    # Upstream errors become a 503 before the stream starts.
    first: list[str] = await anext(batches, [])
    rewrite = _Rewrite(payload["model"], model.id, req.include_usage)

    async def frames() -> AsyncIterator[str]:
        """What arrived from the upstream in one read goes out in one write."""
        prompt, completion, sent, done = estimate, 0, 0, False
        try:
            batch: list[str] | None = first
            while batch is not None:
                out = []
                for data in batch:
                    passed = rewrite.pass_through(data)
                    if passed is not None:
                        frame, has_text = passed
                        sent += has_text
                        out.append(frame)
                        continue
                    chunk = json.loads(data)
                    chunk["model"] = model.id
                    usage = chunk.get("usage")
                    if usage:
                        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
                    sent += sum(1 for c in chunk.get("choices", ()) if _has_text(c))
                    if req.include_usage or chunk.get("choices") or not usage:
                        if not req.include_usage:
                            chunk.pop("usage", None)
                        out.append(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n")
                batch = await anext(batches, None)
                if batch is None:
                    out.append("data: [DONE]\n\n")
                if out:
                    yield "".join(out)
            done = True
        finally:
            await batches.aclose()
            # An aborted stream has no upstream usage yet: one chunk is about one token.
            record(prompt, completion or sent, aborted=not done)

    return EventStream(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


class EventStream(StreamingResponse):
    """Starlette's ``StreamingResponse`` that watches for the client going away with one asyncio
    task instead of an anyio task group (which cost a fifth of a short stream's CPU). As there,
    a disconnect stops the stream at once and closes the generator, whose ``finally`` meters
    what was sent."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await super().__call__(scope, receive, send)
            return
        streaming, gone = True, False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if streaming:
                gone = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone or task.uncancel() > 0:
                raise
        finally:
            streaming = False
            watcher.cancel()
            if gone:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


class _Rewrite:
    """Pass an upstream chunk on as text when it is written the usual compact way: the model
    name swapped in place and a ``"usage":null`` dropped when the client did not ask for usage.
    Chunks that carry usage, or are written otherwise, are parsed instead (``None``)."""

    __slots__ = ("include_usage", "ours", "theirs")

    def __init__(self, upstream_model: str, model_id: str, include_usage: bool) -> None:
        self.theirs = '"model":' + json.dumps(upstream_model)
        self.ours = '"model":' + json.dumps(model_id)
        self.include_usage = include_usage

    def pass_through(self, data: str) -> tuple[str, bool] | None:
        """(the SSE frame, whether the chunk carries text) or None."""
        if data.count(self.theirs) != 1:
            return None
        usages = data.count('"usage"')
        if usages:
            if usages != 1 or ',"usage":null' not in data:
                return None  # usage counted (or written otherwise): parse it
            if not self.include_usage:
                data = data.replace(',"usage":null', "", 1)
        data = data.replace(self.theirs, self.ours, 1)
        has_text = (
            ('"content":"' in data and '"content":""' not in data)
            or ('"text":"' in data and '"text":""' not in data)
            or '"tool_calls":[{' in data
        )
        return f"data: {data}\n\n", has_text


def _has_text(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(choice.get("text") or delta.get("content") or delta.get("tool_calls"))
