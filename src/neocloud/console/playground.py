"""The Studio playground: pick a model, chat with it streaming, see each reply's tokens and cost.

The browser posts the conversation here; this relays it to ``/v1/chat/completions`` with
``stream: true`` as the signed-in key and passes the server-sent events through as they come.
When the last chunk carries the usage, one more event, ``neocloud.cost``, gives the reply's
token counts and its cost at the model's listed prices (``Decimal``, with the currency).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from neocloud.console.app import CsrfRefused, console_of, render, signed_in
from neocloud.console.inproc import ApiFailure
from neocloud.console.session import CSRF_HEADER, same_token

router = APIRouter(include_in_schema=False)
MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 8_000
MAX_REPLY_TOKENS = 256  # at most, and at most half the model's context
PRICE_CURRENCY = "USD"  # the studio's catalog lists its prices in dollars per million tokens
MILLION = Decimal(1_000_000)


USAGE_DAYS = 14


@router.get("/playground", response_class=HTMLResponse)
async def playground_page(request: Request) -> Response:
    caller = await signed_in(request)
    models = (await caller.api.get("/v1/models"))["data"]
    since = console_of(request).clock.now() - timedelta(days=USAGE_DAYS)
    usage = await caller.api.get(
        "/api/v1/studio/usage",
        start_time=since.strftime("%Y-%m-%dT00:00:00Z"),
        bucket_width="1d",
        group_by="model",
    )
    days = [
        {"day": b["start_time"][:10], **r}
        for b in reversed(usage["buckets"])
        for r in b["results"]
        if r["num_model_requests"]
    ]
    return render(
        request, "playground.html", caller, models=models, days=days, totals=usage["totals"]
    )


def cost_of(usage: dict[str, Any], pricing: dict[str, Any]) -> Decimal:
    """The reply's cost in dollars: prompt and completion tokens at the per-million prices."""
    prompt = Decimal(int(usage.get("prompt_tokens", 0)))
    completion = Decimal(int(usage.get("completion_tokens", 0)))
    price_in = Decimal(str(pricing.get("input_per_m_tokens", "0")))
    price_out = Decimal(str(pricing.get("output_per_m_tokens", "0")))
    return (prompt * price_in + completion * price_out) / MILLION


def _usage_in(chunk: bytes) -> dict[str, Any] | None:
    for line in chunk.split(b"\n"):
        if not line.startswith(b"data: ") or b'"usage"' not in line:
            continue
        try:
            usage = json.loads(line[6:]).get("usage")
        except ValueError:
            continue
        if isinstance(usage, dict):
            return usage
    return None


def _messages(payload: Any) -> list[dict[str, str]]:
    raw = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_MESSAGES:
        raise ValueError(f"send 1 to {MAX_MESSAGES} messages")
    out = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
            raise ValueError("each message has a role: user, assistant or system")
        content = m.get("content")
        if not isinstance(content, str) or len(content) > MAX_MESSAGE_CHARS:
            raise ValueError(f"each message is text of at most {MAX_MESSAGE_CHARS} characters")
        out.append({"role": m["role"], "content": content})
    return out


@router.post("/playground/stream")
async def playground_stream(request: Request) -> Response:
    caller = await signed_in(request)
    if not same_token(caller.session.csrf, request.headers.get(CSRF_HEADER)):
        raise CsrfRefused
    try:
        payload = json.loads(await request.body())
        messages = _messages(payload)
        model = str(payload.get("model", ""))[:200]
    except ValueError as exc:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=422)
    models = {m["id"]: m for m in (await caller.api.get("/v1/models"))["data"]}
    if model not in models:
        return JSONResponse({"error": {"message": f"no model {model!r}"}}, status_code=404)
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": min(MAX_REPLY_TOKENS, int(models[model].get("context_length", 512)) // 2),
    }
    chunks = caller.api.stream("/v1/chat/completions", body)
    try:
        first = await anext(chunks)
    except ApiFailure as exc:
        return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)
    except StopAsyncIteration:
        first = b""
    pricing = models[model].get("pricing", {})

    async def relay() -> AsyncIterator[bytes]:
        usage = _usage_in(first)
        try:
            yield first
            async for chunk in chunks:
                usage = _usage_in(chunk) or usage
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        if usage:
            cost = cost_of(usage, pricing)
            event = {
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "cost": {"amount": f"{cost:.8f}", "currency": PRICE_CURRENCY},
            }
            yield f"event: neocloud.cost\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(relay(), media_type="text/event-stream")
