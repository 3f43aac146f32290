"""A pure-ASGI route for the gateway's hot path: ``POST /v1/chat/completions`` and
``POST /v1/completions`` for models served by an upstream pool.

Per proxied request, FastAPI's routing and dependency solving and the platform's generic
middlewares cost more CPU than the proxying itself. ``GatewayApp`` (the platform's FastAPI app)
hands each HTTP request to this route before FastAPI's own entry (its telemetry check, error and
body-limit middlewares) and before the platform's middlewares; the route serves the request
itself when everything about it is ordinary. Anything else goes on, untouched (the body
replayed when it was read), to the full stack, which answers exactly as before:

* the key is not in the studio's principal cache (a key's first request, a bad key, no key), or
  it may not spend (a viewer's: the full stack answers 403);
* the request has an ``Idempotency-Key`` (the idempotency middleware stores and replays);
* the body is not valid JSON or not a valid request, or its model is unknown, not servable or
  served by a local engine: the full stack raises the same error;
* the declared body is over the size bound (the full stack answers 413).

For the requests it serves it does what those layers would: the request id (the caller's
``X-Request-Id`` kept, else one drawn, echoed back either way), the body-size bound, then the
studio's own proxy with the same admission (429 ``rate_limit_exceeded`` with ``Retry-After``,
429 ``insufficient_quota``), the same metering and the same responses and error bodies.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send, body_too_large, replay_body
from neocloud.api.errors import error_response, internal_error_response
from neocloud.api.middleware import new_request_id
from neocloud.kernel.errors import NeocloudError
from neocloud.studio.auth import bearer_token, may_spend
from neocloud.studio.catalog import ModelKind
from neocloud.studio.proxy import proxy
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.schemas import ChatCompletionRequest, CompletionRequest, parse

log = logging.getLogger("neocloud.api")

# path -> (request schema, upstream path, metering endpoint)
_ROUTES: dict[str, tuple[type[ChatCompletionRequest | CompletionRequest], str, str]] = {
    "/v1/chat/completions": (ChatCompletionRequest, "/chat/completions", "chat.completions"),
    "/v1/completions": (CompletionRequest, "/completions", "completions"),
}


class StudioFastPath:
    def __init__(self, app: ASGIApp, *, studio: StudioRuntime, max_body_bytes: int) -> None:
        self.app = app
        self.studio = studio
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = given_id = declared = None
        for name, value in scope["headers"]:
            name = name.lower()
            if name == b"authorization":
                authorization = authorization or value
            elif name == b"x-request-id":
                given_id = given_id or value
            elif name == b"content-length":
                declared = declared or value
            elif name == b"idempotency-key":
                await self.app(scope, receive, send)
                return
        token = bearer_token(authorization.decode("latin-1")) if authorization else None
        principal = self.studio.principals.get(token) if token is not None else None
        if (
            principal is None
            or not may_spend(principal)  # the full stack answers its 403
            or (
                declared is not None
                and declared.strip().isdigit()
                and int(declared) > self.max_body_bytes
            )
        ):
            await self.app(scope, receive, send)
            return

        given = given_id.decode("latin-1").strip() if given_id is not None else ""
        request_id = given if given and len(given) <= 128 else new_request_id()
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(id_header)
            await send(message)

        raw, complete = await self._read_body(receive)
        if not complete:
            await error_response(body_too_large(self.max_body_bytes))(scope, receive, send_with_id)
            return
        schema, path, endpoint = route
        runtime = self.studio
        try:
            body: Any = json.loads(raw)
            req = parse(schema, body)
            model = runtime.catalog.get_servable(req.model, ModelKind.TEXT, runtime.clock.now())
        except (ValueError, NeocloudError):
            model = None
        if model is None or model.engine not in runtime.catalog.upstreams:
            await self.app(scope, replay_body(raw, receive), send)
            return

        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["principal"] = principal
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send_with_id(message)

        try:
            try:
                response: Any = await proxy(
                    runtime, principal, model, body, req, path=path, endpoint=endpoint
                )
            except NeocloudError as exc:
                response = error_response(exc)
            await response(scope, receive, send_tracked)
        except Exception:
            # What the full stack's last-resort handler answers; re-raised for the server's log.
            log.exception("unhandled error on POST %s", scope["path"])
            if not started:
                await internal_error_response()(scope, receive, send_with_id)
            raise

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and False when it grew past the bound."""
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) or message["type"] == "http.disconnect":
            return body, len(body) <= self.max_body_bytes
        chunks, size = [body], len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), size <= self.max_body_bytes


class GatewayApp(FastAPI):
    """The platform's FastAPI app with the studio's fast path in front of it: an HTTP request
    reaches FastAPI only when the fast path does not serve it (``install_fast_path``)."""

    _fast_path: StudioFastPath | None = None

    def install_fast_path(self, studio: StudioRuntime, *, max_body_bytes: int) -> None:
        async def full_stack(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(self, scope, receive, send)

        self._fast_path = StudioFastPath(full_stack, studio=studio, max_body_bytes=max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fast_path is not None and scope["type"] == "http":
            await self._fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
