"""A minimal, fast OpenAI-compatible server: a stand-in for vLLM in tests and benchmarks.

A bare ASGI app (no framework, so it is rarely the bottleneck) that answers ``GET /v1/models``,
``GET /health``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming or not,
with the same few words every time and usage counted as a quarter of the prompt's characters.
With ``stream_options.include_usage`` it sends the final usage chunk as vLLM does. It answers
the rest of OpenAI's request the way a real engine would shape it: ``n`` choices (usage summed
over them), a call of the first tool offered when ``tools`` are given (and, once a ``tool``
message answers it, what the tool said), a JSON object for ``response_format``, ``logprobs``,
and how many images the ``image_url`` parts held.
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
        self.keep = 100
        self.seen: list[dict[str, Any]] = []  # the last ``keep`` request bodies, oldest first
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
        self.seen.append(request)
        del self.seen[: -self.keep]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        chat = path == "/v1/chat/completions"
        answer = _answer(request, chat, self.words)
        n = int(request.get("n") or 1)
        prompt = request.get("messages") if chat else request.get("prompt")
        prompt_tokens = max(1, len(json.dumps(prompt)) // 4)
        completion_tokens = answer.tokens * n  # every choice counts, as vLLM counts them
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {"id": "fake-1", "created": 0, "model": request.get("model", self.name)}
        if not request.get("stream"):
            kind = "chat.completion" if chat else "text_completion"
            choices = [answer.choice(i, chat) for i in range(n)]
            out = {**base, "object": kind, "choices": choices, "usage": usage}
            await _respond(send, 200, _JSON, _dumps(out))
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        kind = "chat.completion.chunk" if chat else "text_completion"
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        frames = []
        for index in range(n):
            for choice in answer.chunks(index, chat):
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


class _Answer:
    """What every choice of one request says: a few words, a JSON object, what a tool
    answered, or a call of the first tool offered."""

    def __init__(
        self,
        pieces: list[str],
        *,
        tool_call: dict[str, Any] | None = None,
        finish: str = "length",
        logprobs: int | None = None,
    ) -> None:
        self.pieces = pieces
        self.tool_call = tool_call
        self.finish = finish
        self.logprobs = logprobs  # None: not asked; else how many alternatives per token
        self.tokens = max(1, len(pieces))

    def _chat_logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        return {"content": [_token_logprob(p, self.logprobs) for p in pieces], "refusal": None}

    def _text_logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
        alternatives = [{p: -0.25} for p in pieces] if self.logprobs else None
        return {
            "tokens": pieces,
            "token_logprobs": [-0.25] * len(pieces),
            "top_logprobs": alternatives,
            "text_offset": offsets,
        }

    def choice(self, index: int, chat: bool) -> dict[str, Any]:
        text = "".join(self.pieces)
        if not chat:
            logprobs = self._text_logprobs(self.pieces)
            return {
                "index": index,
                "text": text,
                "finish_reason": self.finish,
                "logprobs": logprobs,
            }
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if self.tool_call is not None:
            message["tool_calls"] = [self.tool_call]
        return {
            "index": index,
            "message": message,
            "finish_reason": self.finish,
            "logprobs": self._chat_logprobs(self.pieces),
        }

    def chunks(self, index: int, chat: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if chat and self.tool_call is not None:
            call = {"index": 0, **self.tool_call}
            delta = {"role": "assistant", "content": None, "tool_calls": [call]}
            out.append({"index": index, "delta": delta, "finish_reason": None})
        for n, piece in enumerate(self.pieces):
            if chat:
                delta = {"content": piece}
                if n == 0:
                    delta["role"] = "assistant"
                logprobs = self._chat_logprobs([piece])
                out.append(
                    {"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs}
                )
            else:
                logprobs = self._text_logprobs([piece])
                out.append(
                    {"index": index, "text": piece, "finish_reason": None, "logprobs": logprobs}
                )
        last: dict[str, Any] = {"index": index, "finish_reason": self.finish}
        if chat:
            last["delta"] = {}
        else:
            last["text"] = ""
        out.append(last)
        return out


def _token_logprob(token: str, top: int) -> dict[str, Any]:
    alternatives = [{"token": token, "logprob": -0.25, "bytes": list(token.encode())}][:top]
    return {
        "token": token,
        "logprob": -0.25,
        "bytes": list(token.encode()),
        "top_logprobs": alternatives,
    }


def _answer(request: dict[str, Any], chat: bool, words: int) -> _Answer:
    limit = min(
        words, int(request.get("max_tokens") or request.get("max_completion_tokens") or words)
    )
    if not chat:
        logprobs = request.get("logprobs")
        return _Answer(_words(limit), logprobs=None if logprobs is None else int(logprobs))
    top = request.get("top_logprobs") or 0 if request.get("logprobs") else None
    messages = request.get("messages") or [{}]
    last = messages[-1]
    if last.get("role") == "tool":
        said = f"the tool said: {last.get('content')}"
        return _Answer(_split(said), finish="stop", logprobs=top)
    tools, choice = request.get("tools") or [], request.get("tool_choice")
    if tools and choice != "none":
        name = tools[0]["function"]["name"]
        if isinstance(choice, dict):
            name = choice["function"]["name"]
        asked = _text(last.get("content"))
        call = {
            "id": f"call_{len(messages)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"asked": asked})},
        }
        return _Answer([], tool_call=call, finish="tool_calls", logprobs=top)
    if (request.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return _Answer(['{"answer":', ' "hi"}'], finish="stop", logprobs=top)
    images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image_url"
    )
    if images:
        return _Answer(
            _split(f"I see {images} image{'s' * (images > 1)}"), finish="stop", logprobs=top
        )
    return _Answer(_words(limit), logprobs=top)


def _split(text: str) -> list[str]:
    """``text`` as word pieces, each after the first with its leading space."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _words(count: int) -> list[str]:
    return ["hi" if n == 0 else " hi" for n in range(count)]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


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
