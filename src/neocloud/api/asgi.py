"""The ASGI shapes the platform's middlewares and the studio's fast path share, and the two
helpers both need: a ``receive`` that replays a body already read, and the body-size error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from neocloud.kernel.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def replay_body(body: bytes, upstream: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) as one message, then passes
    on whatever ``upstream`` says next (the disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # Past the body, wait for the real disconnect: a streaming response (SSE) listens for
        # it and would stop at once if told the client had gone.
        return await upstream()

    return receive


def body_too_large(limit: int) -> PayloadTooLarge:
    """The 413 for a request body over ``limit`` bytes."""
    return PayloadTooLarge(f"the request body is larger than {limit} bytes", param="body")
