"""``/v1/files`` through the official ``openai`` client: lifecycle, checks, limits, isolation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import NotFound, PayloadTooLarge
from neocloud.studio import files
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import StudioFileRow

CHAT_LINE = {
    "messages": [
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "Quuxville."},
    ]
}


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def batch_line(n: int, url: str = "/v1/chat/completions") -> dict[str, object]:
    body = {"model": "neocloud/echo", "messages": [{"role": "user", "content": f"hi {n}"}]}
    return {"custom_id": f"req-{n}", "method": "POST", "url": url, "body": body}


def org_key(http: TestClient, admin_key: str, slug: str) -> str:
    """The owner's key of a new org ``slug``."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    body = {"name": slug.title(), "slug": slug, "owner_email": f"owner@{slug}.example"}
    org = http.post("/api/v1/orgs", json=body, headers=auth).json()["id"]
    user = http.get(f"/api/v1/orgs/{org}/users", headers=auth).json()["data"][0]["id"]
    made = http.post(
        "/api/v1/keys", json={"name": "k", "org_id": org, "user_id": user}, headers=auth
    )
    return str(made.json()["secret"])


@pytest.fixture
def web(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http


def client(http: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0
    )


@pytest.fixture
def oai(web: TestClient, admin_key: str) -> openai.OpenAI:
    return client(web, org_key(web, admin_key, "acme"))


def test_lifecycle_upload_list_retrieve_content_delete(
    oai: openai.OpenAI, app: FastAPI, settings: object, clock: VirtualClock
) -> None:
    content = jsonl(CHAT_LINE, CHAT_LINE)
    made = oai.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert made.id.startswith("file-")
    assert made.object == "file"
    assert (made.bytes, made.filename, made.purpose, made.status) == (
        len(content),
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert made.created_at == int(clock.now().timestamp())
    clock.advance(timedelta(seconds=5))
    second = oai.files.create(file=("in.jsonl", jsonl(batch_line(1))), purpose="batch")

    assert oai.files.retrieve(made.id) == made
    assert oai.files.content(made.id).content == content
    # newest first by default; cursor paging with `after`, filtering by purpose
    assert [f.id for f in oai.files.list()] == [second.id, made.id]
    assert [f.id for f in oai.files.list(order="asc")] == [made.id, second.id]
    page = oai.files.list(limit=1)
    assert [f.id for f in page.data] == [second.id]
    assert page.has_more is True
    assert [f.id for f in oai.files.list(limit=1, after=second.id).data] == [made.id]
    assert [f.id for f in oai.files.list(limit=1)] == [second.id, made.id]  # auto-paging
    assert [f.id for f in oai.files.list(purpose="batch")] == [second.id]

    # the content is on disk under the data dir, not in the database
    runtime: StudioRuntime = app.state.studio
    stored = list(Path(runtime.files.root).rglob("*"))  # type: ignore[attr-defined]
    assert sum(1 for p in stored if p.is_file()) == 2

    deleted = oai.files.delete(made.id)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    with pytest.raises(openai.NotFoundError) as err:
        oai.files.retrieve(made.id)
    assert err.value.code == "file_not_found"
    assert [f.id for f in oai.files.list()] == [second.id]
    assert sum(1 for p in Path(runtime.files.root).rglob("*") if p.is_file()) == 1  # type: ignore[attr-defined]


def test_wrong_purpose_is_400_naming_the_param(oai: openai.OpenAI) -> None:
    for purpose in ("assistants", "batch_output", "vision"):
        with pytest.raises(openai.BadRequestError) as err:
            oai.files.create(file=("x.jsonl", jsonl(CHAT_LINE)), purpose=purpose)  # type: ignore[arg-type]
        assert err.value.status_code == 400
        assert err.value.param == "purpose"
        assert err.value.code == "invalid_purpose"
    assert list(oai.files.list()) == []


def test_malformed_jsonl_reports_the_first_errors_with_line_numbers(oai: openai.OpenAI) -> None:
    bad = (
        jsonl(CHAT_LINE)
        + b"{not json\n"
        + jsonl({"messages": [{"role": "user", "content": "only a question"}]})
        + jsonl({"messages": [{"role": "wizard", "content": "x"}]})
        + jsonl(CHAT_LINE)
    )
    with pytest.raises(openai.BadRequestError) as err:
        oai.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert err.value.param == "file"
    assert err.value.code == "invalid_file_format"
    body = err.value.body
    assert isinstance(body, dict)
    errors = body["details"]["errors"]
    assert [(e["line"], e["param"]) for e in errors] == [
        (2, None),
        (3, "messages"),
        (4, "messages[0].role"),
    ]
    assert "line 2: not valid JSON" in err.value.message
    assert list(oai.files.list()) == []


def test_batch_lines_need_unique_custom_ids_and_one_url(oai: openai.OpenAI) -> None:
    dup = jsonl(batch_line(1), batch_line(2), batch_line(1))
    with pytest.raises(openai.BadRequestError) as err:
        oai.files.create(file=("b.jsonl", dup), purpose="batch")
    assert "line 3: duplicate custom_id 'req-1'" in err.value.message
    mixed = jsonl(batch_line(1), batch_line(2, url="/v1/embeddings"))
    with pytest.raises(openai.BadRequestError) as err:
        oai.files.create(file=("b.jsonl", mixed), purpose="batch")
    assert "line 2: every line of a batch must have the same url" in err.value.message
    wrong = jsonl({**batch_line(1), "method": "GET"}, {**batch_line(2), "url": "/v1/files"})
    with pytest.raises(openai.BadRequestError) as err:
        oai.files.create(file=("b.jsonl", wrong), purpose="batch")
    body = err.value.body
    assert isinstance(body, dict)
    assert [(e["line"], e["param"]) for e in body["details"]["errors"]] == [
        (1, "method"),
        (2, "url"),
    ]


def test_another_orgs_file_is_404(web: TestClient, admin_key: str, oai: openai.OpenAI) -> None:
    mine = oai.files.create(file=("t.jsonl", jsonl(CHAT_LINE)), purpose="fine-tune")
    other = client(web, org_key(web, admin_key, "globex"))
    for call in (
        lambda: other.files.retrieve(mine.id),
        lambda: other.files.content(mine.id),
        lambda: other.files.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.code == "file_not_found"
    assert list(other.files.list()) == []
    with pytest.raises(openai.BadRequestError) as bad:
        other.files.list(after=mine.id)
    assert bad.value.param == "after"
    assert oai.files.retrieve(mine.id).id == mine.id  # untouched


def test_size_limits_per_file_and_per_org(
    db: Database, clock: VirtualClock, tmp_path: Path, web: TestClient, admin_key: str
) -> None:
    from neocloud.kernel.auth import Principal, Role
    from neocloud.studio.filestore import LocalFileStore

    key = org_key(web, admin_key, "tiny")
    me = web.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    org = me["org"]["id"]
    principal = Principal("key_x", "usr_x", org, Role.OWNER, False)
    store = LocalFileStore(tmp_path / "store")
    limits = files.Limits(file_max_bytes=200, org_max_bytes=300)
    line = jsonl(CHAT_LINE)  # 130-odd bytes

    def upload(content: bytes) -> StudioFileRow:
        return files.create_file(
            db=db,
            clock=clock,
            store=store,
            limits=limits,
            principal=principal,
            filename="f.jsonl",
            purpose="fine-tune",
            content=content,
        )

    with pytest.raises(PayloadTooLarge) as err:
        upload(line * 2)
    assert err.value.code == "file_too_large"
    upload(line)
    upload(line)
    with pytest.raises(PayloadTooLarge) as err:
        upload(line)
    assert err.value.code == "org_files_limit"
    assert err.value.details["limit_bytes"] == 300
    # a refused upload leaves no content behind
    assert sum(1 for p in (tmp_path / "store").rglob("*") if p.is_file()) == 2


def test_an_output_file_is_stored_and_read_for_its_org_only(
    db: Database, clock: VirtualClock, tmp_path: Path, web: TestClient, admin_key: str
) -> None:
    from neocloud.studio.filestore import LocalFileStore

    key = org_key(web, admin_key, "outs")
    org = web.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["org"]["id"]
    store = LocalFileStore(tmp_path / "store")
    row = files.store_output_file(
        db=db, clock=clock, store=store, org_id=org, filename="out.jsonl", content=b"{}\n{}\n"
    )
    assert (row.purpose, row.lines, row.created_by) == ("batch_output", 2, None)
    assert files.read_content(db=db, store=store, org_id=org, file_id=row.id) == b"{}\n{}\n"
    with pytest.raises(NotFound):
        files.read_content(db=db, store=store, org_id="org_other", file_id=row.id)


def test_a_viewer_reads_but_may_not_upload(web: TestClient, admin_key: str) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    body = {"name": "V", "slug": "vorg", "owner_email": "owner@v.example"}
    org = web.post("/api/v1/orgs", json=body, headers=auth).json()["id"]
    viewer = web.post(
        f"/api/v1/orgs/{org}/users", json={"email": "v@v.example", "role": "viewer"}, headers=auth
    ).json()["id"]
    secret = web.post(
        "/api/v1/keys", json={"name": "v", "org_id": org, "user_id": viewer}, headers=auth
    ).json()["secret"]
    v = client(web, secret)
    assert list(v.files.list()) == []
    with pytest.raises(openai.PermissionDeniedError):
        v.files.create(file=("t.jsonl", jsonl(CHAT_LINE)), purpose="fine-tune")
