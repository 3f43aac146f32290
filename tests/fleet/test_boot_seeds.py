"""Boot seeds served to BMCs: ``GET /boot/seeds/{token}.iso`` without an API key, by a token
that serves one boot and expires; never listed, never logged, stored sealed."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.boot_seeds import RedactSeedTokens, byte_range
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.drivers.base import Login
from neocloud.drivers.nocloud import Seed, build_seed_iso, read_seed_iso
from neocloud.fleet.seeds import SeedStore, discard_seeds, publish_seed, token_hash
from neocloud.fleet.tables import BootSeedRow
from neocloud.kernel.clock import VirtualClock

from .helpers import GOOD

SECRET = "db-password-in-user-data-7f3a"


@pytest.fixture
def node_id(admin: Client) -> str:
    assert admin.fleet.import_spec(GOOD)["nodes_created"] > 0
    return str(admin.nodes.list()["data"][0]["id"])


def image() -> bytes:
    script = f"#!/bin/sh\necho {SECRET} > /etc/app.conf\n"
    return build_seed_iso(Seed("inst_1", "box", Login("alice", ("ssh-ed25519 AAAA k",)), script))


def store(app: object, db: Database, clock: VirtualClock) -> SeedStore:
    box = app.state.secret_box  # type: ignore[attr-defined]
    return SeedStore(db, clock, box, "http://control.example:8420/", ttl_s=600)


def test_a_published_seed_is_served_by_its_token_and_stored_sealed(
    app: object, http: TestClient, db: Database, clock: VirtualClock, node_id: str
) -> None:
    iso = image()
    url = store(app, db, clock).publish(node_id=node_id, workload_id="inst_1", image=iso)
    assert url.startswith("http://control.example:8420/boot/seeds/")
    assert url.endswith(".iso")
    path = url.removeprefix("http://control.example:8420")
    got = http.get(path)  # no API key: a BMC sends none
    assert got.status_code == 200
    assert got.content == iso
    assert got.headers["cache-control"] == "no-store"
    assert 'filename="seed.iso"' in got.headers["content-disposition"]
    assert read_seed_iso(got.content)[0] == "cidata"
    assert http.head(path).status_code == 200
    token = path.rsplit("/", 1)[1].removesuffix(".iso")
    assert len(token) >= 40  # 256 bits
    with db.transaction() as s:
        row = s.get(BootSeedRow, token_hash(token))
        assert row is not None
        assert row.fetches == 2
        assert row.size == len(iso)
        stored = repr(tuple(s.execute(sa.select(BootSeedRow.__table__)).one()))
    assert token not in stored
    assert SECRET not in stored
    assert "cidata" not in stored


def test_a_bmc_may_read_the_seed_by_ranges(
    app: object, http: TestClient, db: Database, clock: VirtualClock, node_id: str
) -> None:
    iso = image()
    url = store(app, db, clock).publish(node_id=node_id, workload_id="inst_1", image=iso)
    path = url.removeprefix("http://control.example:8420")
    assert http.get(path).headers["accept-ranges"] == "bytes"
    part = http.get(path, headers={"Range": "bytes=32768-32775"})
    assert part.status_code == 206
    assert part.content == iso[32768:32776]
    assert part.headers["content-range"] == f"bytes 32768-32775/{len(iso)}"
    pieces = [
        http.get(path, headers={"Range": f"bytes={i}-{i + 4095}"}).content
        for i in range(0, len(iso), 4096)
    ]
    assert b"".join(pieces) == iso
    bad = http.get(path, headers={"Range": f"bytes={len(iso)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(iso)}"


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=90-1000", (90, 99)),
        ("bytes=100-", None),
        ("bytes=9-5", None),
        ("bytes=-0", None),
        ("bytes=-", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_byte_ranges_as_a_table(header: str, span: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == span


def test_unknown_expired_and_discarded_tokens_are_404_and_nothing_is_listed(
    app: object, http: TestClient, db: Database, clock: VirtualClock, node_id: str
) -> None:
    seeds = store(app, db, clock)
    first = seeds.publish(node_id=node_id, workload_id="inst_1", image=image())
    second = seeds.publish(node_id=node_id, workload_id="inst_2", image=image())
    base = "http://control.example:8420"
    for path in (
        "/boot/seeds/" + "A" * 43 + ".iso",  # unknown
        "/boot/seeds/short.iso",
        first.removeprefix(base).removesuffix(".iso"),  # no .iso
        "/boot/seeds",
        "/boot/seeds/",
    ):
        r = http.get(path)
        assert r.status_code == 404, (path, r.status_code)
    seeds.discard(node_id=node_id, workload_id="inst_1")
    assert http.get(first.removeprefix(base)).status_code == 404
    assert http.get(second.removeprefix(base)).status_code == 200
    clock.advance(601)  # past its time to live
    assert http.get(second.removeprefix(base)).status_code == 404
    assert "/boot/seeds" not in http.get("/api/v1/openapi.json").text
    # An expired seed is deleted by the next discard, whichever node it was for.
    discard_seeds(db=db, node_id="node_none", clock=clock)
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(BootSeedRow)) == 0


def test_a_seed_holds_at_most_four_mib(
    app: object, db: Database, clock: VirtualClock, node_id: str
) -> None:
    from neocloud.kernel.errors import ValidationFailed

    box = app.state.secret_box  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed):
        publish_seed(
            db=db,
            clock=clock,
            box=box,
            node_id=node_id,
            workload_id="w",
            image=b"\0" * ((4 << 20) + 1),
        )


def test_the_access_log_never_shows_a_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.9:51234", "GET", "/boot/seeds/SeCrEtToKeN-abc_123.iso", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSeedTokens().filter(record)
    assert record.getMessage() == '10.0.0.9:51234 - "GET /boot/seeds/*** HTTP/1.1" 200'
    other = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s", ("/api/v1/nodes",), None
    )
    RedactSeedTokens().filter(other)
    assert other.getMessage() == "/api/v1/nodes"
