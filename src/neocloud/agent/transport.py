"""Posting heartbeats to the control plane over HTTP (``httpx``, one keep-alive connection).

The agent token travels only in the ``Authorization`` header: it is in no URL, no log line,
no error message and no ``repr``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from neocloud.agent.wire import Answer, one_line, parse_answer

HEARTBEAT_PATH = "/api/v1/agent/heartbeat"


class ControlPlaneError(Exception):
    """A heartbeat the control plane did not take: unreachable, refused or a bad answer.
    ``retry_after_s``: the server asked for at least this long a pause (429, 503)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class ControlPlane(Protocol):
    """Where heartbeats go."""

    def heartbeat(self, payload: dict[str, Any]) -> Answer:
        """Post one heartbeat; the answer, or ``ControlPlaneError``."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


REFUSALS = {
    401: "the control plane refused the agent token (401): it is revoked or wrong; issue a new "
    "one for this node (POST /api/v1/nodes/{node_id}/agent-token) and restart the agent",
    403: "the agent token belongs to another node (403): check --node-id",
}


class HttpControlPlane:
    """The control plane at ``url`` (``https://cloud.example``), authenticated by ``token``."""

    def __init__(
        self, url: str, token: str, *, timeout_s: float = 10.0, user_agent: str = "neocloud-agent"
    ) -> None:
        httpx: Any = importlib.import_module("httpx")
        self._httpx = httpx
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": user_agent}
        self._client: Any = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __repr__(self) -> str:
        return f"HttpControlPlane({self.url!r})"

    def heartbeat(self, payload: dict[str, Any]) -> Answer:
        try:
            response = self._client.post(HEARTBEAT_PATH, json=payload, headers=self._headers)
        except self._httpx.HTTPError as exc:
            raise ControlPlaneError(
                f"control plane {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        status = int(response.status_code)
        if status == 200:
            try:
                return parse_answer(response.json())
            except ValueError as exc:
                raise ControlPlaneError(
                    f"unexpected heartbeat answer: {exc}", status=status
                ) from None
        if status in REFUSALS:
            raise ControlPlaneError(
                REFUSALS[status].format(node_id=payload.get("node_id")), status=status
            )
        raise ControlPlaneError(
            f"heartbeat answered {status}: {_error_message(response)}",
            status=status,
            retry_after_s=_retry_after(response.headers.get("Retry-After")),
        )

    def close(self) -> None:
        self._client.close()


def _error_message(response: Any) -> str:
    """The neocloud error's message (``{"error": {"message", "param"}}``), else the text."""
    try:
        error = response.json().get("error") or {}
        text = str(error.get("message") or "")
        if error.get("param"):
            text += f" (param {error['param']})"
    except (ValueError, AttributeError):
        text = str(response.text)
    return one_line(text or "no message", 300)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
