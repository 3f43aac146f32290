"""The SDK's outbound limits: a server that never answers fails the call within the timeout,
and a 429's Retry-After is waited for before the retry."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from neocloud.client import ApiError
from neocloud.client.transport import Transport


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_fails_within_the_timeout(silent_server: str) -> None:
    transport = Transport(silent_server, "nck_x", timeout=0.5, retries=0)
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        transport.get("me")
    assert time.monotonic() - started < 5
    assert caught.value.code == "unreachable"
    transport.close()


def test_a_429_is_retried_after_its_retry_after() -> None:
    calls: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            body = {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded"}}
            return httpx.Response(429, json=body, headers={"Retry-After": "1"})
        return httpx.Response(200, json={"ok": True})

    http = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://api.test")
    transport = Transport(api_key="nck_x", retries=1, http=http)
    assert transport.get("me") == {"ok": True}
    assert calls[1] - calls[0] >= 0.95
