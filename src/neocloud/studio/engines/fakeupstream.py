"""A minimal, fast OpenAI-compatible server: a stand-in for vLLM in tests and benchmarks.

A bare ASGI app (no framework, so it is rarely the bottleneck) that answers ``GET /v1/models``,
``GET /health``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming or not,
with the same few words every time and usage counted as a quarter of the prompt's characters.
With ``stream_options.include_usage`` it sends the final usage chunk as vLLM does.
``GET /stats`` tells how many generations it served (tests use it to see the balancing).

``python -m neocloud.studio.engines.fakeupstream --port 9000 [--words 8] [--delay-ms 0]
[--ssl-certfile cert.pem --ssl-keyfile key.pem]`` (with both, it serves ``https://``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class FakeUpstream:
    def __init__(self, *, name: str = "fake", words: int = 8, delay_s: float = 0.0) -> None:
        self.name = name
        self.words = words
        self.delay_s = delay_s
        self.served = 0
        self._models = _dumps(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/v1/models", "/health", "/stats"):
            body = self._models if path == "/v1/models" else b"{}"
            if path == "/stats":
                body = _dumps({"served": self.served})
            await _respond(send, 200, _JSON, body)
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            await _respond(send, 404, _JSON, b'{"error":{"message":"not found"}}')
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(raw)
        self.served += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        chat = path == "/v1/chat/completions"
        prompt = request.get("messages") if chat else request.get("prompt")
        words = min(self.words, int(request.get("max_tokens") or self.words))
        usage = {
            "prompt_tokens": max(1, len(json.dumps(prompt)) // 4),
            "completion_tokens": words,
            "total_tokens": max(1, len(json.dumps(prompt)) // 4) + words,
        }
        base = {"id": "fake-1", "created": 0, "model": request.get("model", self.name)}
        if not request.get("stream"):
            text = " ".join(["hi"] * words)
            if chat:
                message_out = {"role": "assistant", "content": text}
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": message_out,
                    "finish_reason": "length",
                    "logprobs": None,
                }
                out = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            else:
                choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
                out = {**base, "object": "text_completion", "choices": [choice], "usage": usage}
            await _respond(send, 200, _JSON, _dumps(out))
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        kind = "chat.completion.chunk" if chat else "text_completion"
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        frames = []
        for n in range(words + 1):
            last = n == words
            piece = "" if last else (" hi" if n else "hi")
            if chat:
                delta = {} if last else {"content": piece}
                if n == 0:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "finish_reason": "length" if last else None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": "length" if last else None}
            chunk: dict[str, Any] = {**base, "object": kind, "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            frames.append(b"data: " + _dumps(chunk) + b"\n\n")
        if include_usage:
            frames.append(
                b"data: "
                + _dumps({**base, "object": kind, "choices": [], "usage": usage})
                + b"\n\n"
            )
        frames.append(b"data: [DONE]\n\n")
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--ssl-certfile", default=None, help="PEM certificate: serve https://")
    parser.add_argument("--ssl-keyfile", default=None, help="PEM key of --ssl-certfile")
    args = parser.parse_args()
    app = FakeUpstream(name=args.name, words=args.words, delay_s=args.delay_ms / 1000)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )


if __name__ == "__main__":
    main()
