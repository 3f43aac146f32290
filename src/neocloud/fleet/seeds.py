"""Boot seeds: the cloud-init images a node's BMC fetches over HTTP when it boots.

A BMC mounts virtual media from a URL and sends no credentials the platform could check, so a
seed is reached by an unguessable token (256 bits) in its URL, ``/boot/seeds/{token}.iso``
under the platform's public URL. The token is shown once, to the driver that inserts the
medium; the database keeps only its sha256 and the image sealed with the platform's secret box
(a seed holds the tenant's user data, which may hold secrets), compressed (an image is mostly
zeros: about 70 KiB become about 2 KiB).

A seed serves one boot: it expires ``ttl_s`` after it was made (30 minutes by default,
``NEOCLOUD_SEED_TTL_S``), and it is discarded as soon as the boot it was made for is over (the
workload running, ended or failed; the node reimaged or failed). An unknown, expired or
discarded token answers 404, the same for each. Seeds are never listed, and neither a token
nor a seed's content is logged; a fetch is counted on the row.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import zlib
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.fleet.tables import BootSeedRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.secrets import SealedSecretError, SecretBox

SEED_PATH = "/boot/seeds"
MAX_SEED_BYTES = 4 * 1024 * 1024  # a seed of 64 KiB of user data is about 200 KiB
DEFAULT_TTL_S = 1800.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", errors="replace")).hexdigest()


def publish_seed(
    *,
    db: Database,
    clock: Clock,
    box: SecretBox,
    node_id: str,
    workload_id: str,
    image: bytes,
    ttl_s: float = DEFAULT_TTL_S,
) -> str:
    """Store a seed image for one boot of ``node_id``; returns its token (shown only here)."""
    if len(image) > MAX_SEED_BYTES:
        raise ValidationFailed(f"a seed image is at most {MAX_SEED_BYTES} bytes", param="image")
    token = secrets.token_urlsafe(32)
    packed = base64.b64encode(zlib.compress(image, 9)).decode("ascii")
    now = clock.now()
    with db.transaction() as s:
        s.add(
            BootSeedRow(
                token_hash=token_hash(token),
                node_id=node_id,
                workload_id=workload_id,
                sealed=box.seal({"image": packed}),
                size=len(image),
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
                fetches=0,
            )
        )
    return token


def fetch_seed(*, db: Database, clock: Clock, box: SecretBox, token: str) -> bytes:
    """The seed image for ``token``; ``NotFound`` for an unknown, expired or discarded one."""
    gone = NotFound("no such seed", code="seed_not_found")
    if not 20 <= len(token) <= 100:
        raise gone
    with db.transaction() as s:
        row = s.get(BootSeedRow, token_hash(token))
        if row is None or row.expires_at <= clock.now():
            raise gone
        row.fetches += 1
        sealed = row.sealed
    try:
        packed = box.open(sealed)["image"]
        return zlib.decompress(base64.b64decode(packed))
    except (SealedSecretError, KeyError, ValueError, zlib.error):
        raise gone from None


def discard_seeds(
    *, db: Database, node_id: str, workload_id: str | None = None, clock: Clock | None = None
) -> int:
    """Delete a node's seeds (one workload's only, with ``workload_id``), and with ``clock``
    every expired seed of any node; returns how many rows went."""
    cond = BootSeedRow.node_id == node_id
    if workload_id is not None:
        cond = sa.and_(cond, BootSeedRow.workload_id == workload_id)
    if clock is not None:
        cond = sa.or_(cond, BootSeedRow.expires_at <= clock.now())
    with db.transaction() as s:
        result = s.execute(sa.delete(BootSeedRow).where(cond))
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass
class SeedStore:
    """The drivers' ``SeedPublisher`` backed by this module: seeds in the database, served by
    the API under ``base_url`` (the platform's public URL, which the BMCs must reach)."""

    db: Database
    clock: Clock
    box: SecretBox
    base_url: str
    ttl_s: float = DEFAULT_TTL_S

    def publish(self, *, node_id: str, workload_id: str, image: bytes) -> str:
        token = publish_seed(
            db=self.db,
            clock=self.clock,
            box=self.box,
            node_id=node_id,
            workload_id=workload_id,
            image=image,
            ttl_s=self.ttl_s,
        )
        return f"{self.base_url.rstrip('/')}{SEED_PATH}/{token}.iso"

    def discard(self, *, node_id: str, workload_id: str | None = None) -> None:
        discard_seeds(db=self.db, node_id=node_id, workload_id=workload_id, clock=self.clock)
