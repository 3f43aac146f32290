"""A process that claims an ``Idempotency-Key``, writes its effect and SIGKILLs itself, just
before that write commits or just after (before the response is stored), for
tests/api/test_idempotency_crash.py.

Usage: idempotency_child.py DATABASE_URL ISO_TIME KEY before-commit|after-commit
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.api.middleware import IDEMPOTENCY_KEYS, BodyLimitAndIdempotencyMiddleware, Claim
from neocloud.db.effects import EffectMark, marking_effects
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import VirtualClock

SCOPE = "key_child"


def main(url: str, when: str, key: str, moment: str) -> None:
    async def app(*_: Any) -> None:
        raise AssertionError("not called")

    def authenticate(token: str) -> Principal:
        raise AssertionError("not called")

    db = Database.from_url(url)
    clock = VirtualClock(datetime.fromisoformat(when))
    mw = BodyLimitAndIdempotencyMiddleware(
        app, db=db, clock=clock, authenticate=authenticate, max_body_bytes=1024, ttl_s=3600
    )
    token = mw.claim(SCOPE, key, "POST", "/api/v1/orgs", "hash")
    assert isinstance(token, str)
    claim = Claim(SCOPE, key, token)

    def record(session: Session) -> None:
        mw.record_effect(session, claim)
        if moment == "before-commit":  # the stamp and the write are in flight, uncommitted
            os.kill(os.getpid(), signal.SIGKILL)

    with marking_effects(EffectMark(record)), db.transaction() as s:
        s.execute(
            sa.insert(IDEMPOTENCY_KEYS).values(
                scope="effects",
                key=f"{key}-effect",
                method="POST",
                path="/x",
                request_hash="h",
                created_at=clock.now(),
            )
        )
    os.kill(os.getpid(), signal.SIGKILL)  # committed; the response is never stored


if __name__ == "__main__":
    main(*sys.argv[1:5])
