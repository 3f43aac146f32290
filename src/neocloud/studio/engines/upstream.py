"""Upstream engines: any OpenAI-compatible server (vLLM, SGLang, …) registered by URL.

A pool holds the replicas of one upstream; each request goes to the healthy replica with the
fewest requests in flight (least outstanding requests). A replica that refuses connections is
taken out for ``cooldown_s``. Requests are passed through with the model name rewritten; streams
always ask the upstream for usage (so aborted and finished streams are metered as it counted)
and hide the usage chunk again when the client did not ask for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from neocloud.kernel.errors import Unavailable

Chunks = AsyncGenerator[dict[str, Any], None]


@dataclass
class Replica:
    url: str  # the base URL, ending in /v1
    outstanding: int = 0
    down_until: float = 0.0


@dataclass
class UpstreamPool:
    name: str
    urls: list[str]
    client: httpx2.AsyncClient = field(default_factory=lambda: httpx2.AsyncClient(timeout=600))
    api_key: str | None = None
    cooldown_s: float = 10.0
    now: Callable[[], float] = time.monotonic
    replicas: list[Replica] = field(init=False)

    def __post_init__(self) -> None:
        self.replicas = [Replica(url.rstrip("/")) for url in self.urls]

    def pick(self) -> Replica:
        t = self.now()
        healthy = [r for r in self.replicas if r.down_until <= t] or self.replicas
        return min(healthy, key=lambda r: r.outstanding)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def post(self, path: str, payload: dict[str, Any]) -> httpx2.Response:
        replica = self.pick()
        replica.outstanding += 1
        try:
            return await self.client.post(replica.url + path, json=payload, headers=self._headers())
        except httpx2.TransportError as exc:
            replica.down_until = self.now() + self.cooldown_s
            raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
        finally:
            replica.outstanding -= 1

    async def stream(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the upstream's SSE chunks as JSON objects (``[DONE]`` ends the iteration)."""
        replica = self.pick()
        replica.outstanding += 1
        try:
            request = self.client.build_request(
                "POST", replica.url + path, json=payload, headers=self._headers()
            )
            try:
                response = await self.client.send(request, stream=True)
            except httpx2.TransportError as exc:
                replica.down_until = self.now() + self.cooldown_s
                raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise Unavailable(
                        f"upstream {self.name} answered {response.status_code}",
                        details={"upstream": _json_or_text(response)},
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
            finally:
                await response.aclose()
        finally:
            replica.outstanding -= 1


def _json_or_text(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]
