"""HTTP transport for the SDK: auth, errors, pagination and idempotent retries.

``Transport`` is what the resources (``client.nodes``, …) make their requests through: JSON with
``request``/``get``/``post``/``patch``/``delete``, every page with ``iter``, text (CSV) with
``get_text``. ``Client`` (``neocloud.client.base``) is a ``Transport`` with the resources on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, Self

import httpx

DEFAULT_URL = "http://127.0.0.1:8420"
CONNECT_TIMEOUT_S = 10.0
# A Retry-After longer than this is not waited for: the call fails and the caller decides.
MAX_RETRY_AFTER_S = 60.0
_RETRY_STATUSES = {429, 502, 503, 504}  # 429: after its Retry-After (see _backoff)


class ApiError(Exception):
    """An error answered by the API (or a transport failure, with ``status`` 0)."""

    def __init__(
        self,
        status: int,
        type: str,
        code: str,
        message: str,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.type, self.code = status, type, code
        self.message, self.param, self.details = message, param, details or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            err = response.json()["error"]
            return cls(
                response.status_code,
                err.get("type", "api_error"),
                err.get("code", "error"),
                err.get("message", response.text),
                err.get("param"),
                err.get("details"),
            )
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "api_error", "http_error", response.text[:500])


class Transport:
    """A connection to one neocloud API with one key."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        http: httpx.Client | None = None,
    ) -> None:
        """``timeout``: seconds each phase of a call may take (waiting for the connection, for
        each read of the answer, for each write), default 30; connecting gets at most 10 of
        them. ``http`` lets tests hand in an ``httpx.Client`` (e.g. Starlette's TestClient)."""
        headers = {"User-Agent": "neocloud-sdk"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.retries = retries
        if http is None:
            limits = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
            http = httpx.Client(base_url=base_url.rstrip("/"), timeout=limits)
        http.headers.update(headers)
        self._http = http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one request and return its JSON; POSTs carry an idempotency key so a retry
        after a dropped connection cannot create a thing twice."""
        response = self._send(
            method,
            path,
            json=json,
            params=params,
            content=content,
            headers=headers,
            idempotency_key=idempotency_key,
        )
        return response.json() if response.content else None

    def get_text(self, path: str, **params: Any) -> str:
        """GET a text answer (a CSV export, a catalog), with the same auth, retries and errors
        as ``get``; ``path`` is relative to ``/api/v1/`` unless it starts with ``/``."""
        return self._send("GET", path, params=params).text

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """The successful response; ``ApiError`` for an error answer or no connection."""
        headers = dict(headers or {})
        if method == "POST":
            headers.setdefault("Idempotency-Key", idempotency_key or str(uuid.uuid4()))
        # None when empty: httpx replaces a query written in ``path`` with an empty mapping.
        clean = {k: v for k, v in (params or {}).items() if v is not None} or None
        url = path if path.startswith("/") else f"/api/v1/{path}"
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(
                    method, url, json=json, params=clean, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt < self.retries:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise ApiError(0, "connection_error", "unreachable", str(exc)) from exc
            if response.status_code in _RETRY_STATUSES and attempt < self.retries:
                time.sleep(_backoff(response, attempt))
                continue
            if response.status_code >= 400:
                raise ApiError.from_response(response)
            return response
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, *, idempotency_key: str | None = None) -> Any:
        return self.request("POST", path, json=body, idempotency_key=idempotency_key)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def iter(self, path: str, *, page_size: int = 500, **params: Any) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint, following ``next_cursor`` page by page."""
        after: str | None = None
        while True:
            page = self.get(path, limit=page_size, after=after, **params)
            yield from page["data"]
            if not page["has_more"]:
                return
            after = page["next_cursor"]


def _backoff(response: httpx.Response, attempt: int) -> float:
    """Seconds before the next try: the server's ``Retry-After`` (a rate limit's 429, a 503)
    when it asks for at most ``MAX_RETRY_AFTER_S``, else an exponential backoff."""
    backoff: float = 0.2 * 2.0**attempt
    try:
        asked = float(response.headers.get("retry-after", ""))
    except ValueError:
        return backoff
    return max(backoff, asked) if 0 <= asked <= MAX_RETRY_AFTER_S else backoff
