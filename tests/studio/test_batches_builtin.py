"""A batch on the real built-in model (the tiny Llama, on CPU), run by the server's own worker
thread on the server's event loop, beside online requests to the same engine."""

from __future__ import annotations

import json
import time

import openai
import pytest
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.runtime import StudioRuntime, builtin_catalog

from .test_files import jsonl

pytest.importorskip("torch")

COUNT = {"role": "user", "content": "Count to five."}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_builtin_model_batch(
    settings: Settings, db: Database, clock: VirtualClock, admin_key: str
) -> None:
    app = create_app(settings=settings, db=db, clock=clock)
    runtime: StudioRuntime = app.state.studio
    runtime.catalog = builtin_catalog()
    lines = [
        {
            "custom_id": f"count-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "neocloud/tiny-llama",
                "messages": [COUNT],
                "temperature": 0,
                "max_tokens": 40,
            },
        }
        for i in range(12)
    ]
    with TestClient(app) as http:
        oai = openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )
        file_id = oai.files.create(file=("b.jsonl", jsonl(*lines)), purpose="batch").id
        batch = oai.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        online = oai.chat.completions.create(
            model="neocloud/tiny-llama", messages=[COUNT], temperature=0, max_tokens=40
        )
        assert online.choices[0].message.content == "One, two, three, four, five."
        deadline = time.monotonic() + 120
        while (done := oai.batches.retrieve(batch.id)).status != "completed":
            assert time.monotonic() < deadline, f"the batch is still {done.status}"
            time.sleep(0.1)
        assert done.output_file_id is not None
        out = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    assert len(out) == 12
    for line in out:
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == "One, two, three, four, five."
        assert body["usage"]["prompt_tokens"] == 9
