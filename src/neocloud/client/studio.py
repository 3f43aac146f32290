"""SDK resource for AI Studio's platform API: ``client.studio``.

``client.studio.models`` is the model catalog (the operator's registry); ``usage`` reads an
org's tokens per time bucket; key rate limits and org budgets are the operator's settings.
``batches`` are ``/v1/batches``; ``files`` and ``fine_tuning`` call the jobs endpoints under
``/v1`` (``client.studio_jobs``); the rest of the OpenAI-compatible API is for an OpenAI client.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from neocloud.client.resources import Resource
from neocloud.client.studio_jobs import StudioFilesResource, StudioFineTuningResource
from neocloud.client.transport import Transport

Obj = dict[str, Any]


def _when(value: str | int | datetime | None) -> str | None:
    """A time for a query: RFC 3339 text or unix seconds as given, a datetime as RFC 3339."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _csv(values: Sequence[str] | str | None) -> str | None:
    if values is None or isinstance(values, str):
        return values
    return ",".join(values) or None


class StudioModelsResource(Resource):
    def list(self) -> Obj:
        """Every model of the catalog, built-in and registered, servable or not."""
        result: Obj = self._c.get("studio/models")
        return result

    def get(self, model_id: str) -> Obj:
        result: Obj = self._c.get(f"studio/models/{model_id}")
        return result

    def add(
        self,
        model_id: str,
        *,
        path: str | None = None,
        upstream_urls: Sequence[str] = (),
        upstream_model: str | None = None,
        context_length: int | None = None,
        input_price_per_m: str | Decimal | None = None,
        output_price_per_m: str | Decimal | None = None,
        flavor: str = "base",
        deprecated_on: str | None = None,
    ) -> Obj:
        """Register a local checkpoint (``path``) or an OpenAI-compatible upstream
        (``upstream_urls``); operator admins. Prices are per 1M tokens, decimal strings; the
        API requires both (``"0"`` serves the model free on purpose)."""
        body: Obj = {"id": model_id, "flavor": flavor}
        if input_price_per_m is not None:
            body["input_price_per_m"] = str(input_price_per_m)
        if output_price_per_m is not None:
            body["output_price_per_m"] = str(output_price_per_m)
        if path is not None:
            body["path"] = path
        if upstream_urls:
            body["upstream_urls"] = list(upstream_urls)
            body["upstream_model"] = upstream_model
        if context_length is not None:
            body["context_length"] = context_length
        if deprecated_on is not None:
            body["deprecated_on"] = deprecated_on
        result: Obj = self._c.post("studio/models", body)
        return result

    def remove(self, model_id: str) -> Obj:
        """Stop serving a registered model (built-in ones cannot be removed)."""
        result: Obj = self._c.delete(f"studio/models/{model_id}")
        return result


class StudioBatchesResource(Resource):
    """``/v1/batches``: an org's batches (the OpenAI batch API, through this client's key)."""

    def create(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> Obj:
        """A batch of the requests in a ``batch`` file (``/v1/chat/completions`` or
        ``/v1/embeddings``); it starts ``validating``."""
        body: Obj = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata is not None:
            body["metadata"] = metadata
        result: Obj = self._c.post("/v1/batches", body)
        return result

    def get(self, batch_id: str) -> Obj:
        result: Obj = self._c.get(f"/v1/batches/{batch_id}")
        return result

    def list(self, *, after: str | None = None, limit: int | None = None) -> Obj:
        """A page of the org's batches, newest first (``has_more``, ``last_id`` to page on)."""
        result: Obj = self._c.get("/v1/batches", after=after, limit=limit)
        return result

    def cancel(self, batch_id: str) -> Obj:
        result: Obj = self._c.post(f"/v1/batches/{batch_id}/cancel")
        return result


class StudioResource(Resource):
    models: StudioModelsResource
    batches: StudioBatchesResource
    files: StudioFilesResource
    fine_tuning: StudioFineTuningResource

    def __init__(self, client: Transport) -> None:
        super().__init__(client)
        self.models = StudioModelsResource(client)
        self.batches = StudioBatchesResource(client)
        self.files = StudioFilesResource(client)
        self.fine_tuning = StudioFineTuningResource(client)

    def usage(
        self,
        start_time: str | int | datetime,
        *,
        end_time: str | int | datetime | None = None,
        bucket_width: str | None = None,
        group_by: Sequence[str] | str | None = None,
        models: Sequence[str] | str | None = None,
        api_key_ids: Sequence[str] | str | None = None,
        org_id: str | None = None,
        limit: int | None = None,
        page: str | None = None,
    ) -> Obj:
        """Tokens and requests per bucket (``1m``, ``1h``, ``1d``) of ``[start_time, end_time)``
        grouped by any of ``model``, ``api_key_id``, ``endpoint``, ``org_id``; times are RFC
        3339 or unix seconds, ``end_time`` defaults to now and ``org_id`` to the key's org
        (``all``: every org, operator staff). With ``limit`` one page of buckets: pass the
        answer's ``next_page`` as ``page`` while ``has_more``."""
        result: Obj = self._c.get(
            "studio/usage",
            start_time=_when(start_time),
            end_time=_when(end_time),
            bucket_width=bucket_width,
            group_by=_csv(group_by),
            models=_csv(models),
            api_key_ids=_csv(api_key_ids),
            org_id=org_id,
            limit=limit,
            page=page,
        )
        return result

    def key_limits(self, key_id: str) -> Obj:
        """A key's rate-limit overrides and the limits in effect (operator staff)."""
        result: Obj = self._c.get(f"studio/keys/{key_id}/limits")
        return result

    def set_key_limits(
        self,
        key_id: str,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> Obj:
        """Replace a key's overrides (operator admins); ``None`` means the default for that
        bucket, so leaving one out clears it."""
        body = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
        result: Obj = self._c.request("PUT", f"studio/keys/{key_id}/limits", json=body)
        return result

    def org_budget(self, org_id: str) -> Obj:
        """An org's monthly token budget, whether it is suspended, and its tokens this month."""
        result: Obj = self._c.get(f"studio/orgs/{org_id}/budget")
        return result

    def set_org_budget(
        self, org_id: str, *, monthly_token_limit: int | None = None, suspended: bool = False
    ) -> Obj:
        """Replace an org's budget (operator admins): ``monthly_token_limit`` ``None`` is no
        budget; ``suspended`` refuses every call."""
        body = {"monthly_token_limit": monthly_token_limit, "suspended": suspended}
        result: Obj = self._c.request("PUT", f"studio/orgs/{org_id}/budget", json=body)
        return result
