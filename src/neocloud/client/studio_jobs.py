"""SDK resources for the studio's jobs API under ``/v1``: ``client.studio.files`` and
``client.studio.fine_tuning`` (the same endpoints the official ``openai`` client calls; these
return the API's JSON as dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from neocloud.client.resources import Resource

Obj = dict[str, Any]


class StudioFilesResource(Resource):
    def upload(self, path: Path | str, *, purpose: str, filename: str | None = None) -> Obj:
        """Upload a JSONL file (``purpose``: ``fine-tune`` or ``batch``); it is checked line by
        line and the first problems come back with their line numbers."""
        source = Path(path)
        return self.upload_bytes(
            source.read_bytes(), purpose=purpose, filename=filename or source.name
        )

    def upload_bytes(self, content: bytes, *, purpose: str, filename: str) -> Obj:
        # The multipart body as httpx encodes it, sent through the client's own transport.
        encoded = httpx.Request(
            "POST", "http://upload/", files={"file": (filename, content)}, data={"purpose": purpose}
        )
        body = encoded.read()
        headers = {"Content-Type": encoded.headers["content-type"]}
        result: Obj = self._c.request("POST", "/v1/files", content=body, headers=headers)
        return result

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: str | None = None,
    ) -> Obj:
        result: Obj = self._c.get(
            "/v1/files", purpose=purpose, limit=limit, after=after, order=order
        )
        return result

    def get(self, file_id: str) -> Obj:
        result: Obj = self._c.get(f"/v1/files/{file_id}")
        return result

    def content(self, file_id: str) -> bytes:
        return self._c.get_text(f"/v1/files/{file_id}/content").encode()

    def delete(self, file_id: str) -> Obj:
        result: Obj = self._c.delete(f"/v1/files/{file_id}")
        return result


class StudioFineTuningResource(Resource):
    def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        hyperparameters: dict[str, Any] | None = None,
    ) -> Obj:
        """A LoRA fine-tuning job; ``hyperparameters``: n_epochs, batch_size,
        learning_rate_multiplier, lora_rank, lora_alpha (documented defaults when absent)."""
        body: Obj = {"model": model, "training_file": training_file}
        if validation_file is not None:
            body["validation_file"] = validation_file
        if suffix is not None:
            body["suffix"] = suffix
        if seed is not None:
            body["seed"] = seed
        if hyperparameters:
            body["method"] = {
                "type": "supervised",
                "supervised": {"hyperparameters": hyperparameters},
            }
        result: Obj = self._c.post("/v1/fine_tuning/jobs", body)
        return result

    def list(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("/v1/fine_tuning/jobs", limit=limit, after=after)
        return result

    def get(self, job_id: str) -> Obj:
        result: Obj = self._c.get(f"/v1/fine_tuning/jobs/{job_id}")
        return result

    def cancel(self, job_id: str) -> Obj:
        result: Obj = self._c.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        return result

    def events(self, job_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get(f"/v1/fine_tuning/jobs/{job_id}/events", limit=limit, after=after)
        return result

    def checkpoints(
        self, job_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get(
            f"/v1/fine_tuning/jobs/{job_id}/checkpoints", limit=limit, after=after
        )
        return result

    def delete_model(self, model_id: str) -> Obj:
        """Delete a fine-tuned model (``ft:…``) of your org."""
        result: Obj = self._c.delete(f"/v1/models/{model_id}")
        return result
