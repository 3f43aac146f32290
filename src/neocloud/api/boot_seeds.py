"""``GET /boot/seeds/{token}.iso``: the cloud-init seed a node's BMC mounts (``fleet.seeds``).

Outside ``/api/v1``: a BMC sends no API key, and the token in the path is the credential (one
boot's, 256 bits, expiring). Unknown, expired and discarded tokens all answer 404. The path is
redacted from the server's access log, which would otherwise keep the token.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from neocloud.fleet.seeds import SEED_PATH, fetch_seed
from neocloud.kernel.errors import NotFound
from neocloud.web.deps import AppContext, get_ctx

router = APIRouter(include_in_schema=False)
_TOKEN_IN_PATH = re.compile(re.escape(SEED_PATH) + r"/[^\s\"]+")


class RedactSeedTokens(logging.Filter):
    """Replaces a seed's token in an access log line with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub(f"{SEED_PATH}/***", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str) and SEED_PATH in record.msg:
            record.msg = _TOKEN_IN_PATH.sub(f"{SEED_PATH}/***", record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSeedTokens) for f in access.filters):
        access.addFilter(RedactSeedTokens())


@router.api_route(SEED_PATH + "/{name}", methods=["GET", "HEAD"])
def get_seed(name: str, request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Response:
    """The seed image (ISO 9660), ``application/octet-stream``, never cached."""
    if not name.endswith(".iso"):
        raise NotFound("no such seed", code="seed_not_found")
    image = fetch_seed(
        db=ctx.db, clock=ctx.clock, box=request.app.state.secret_box, token=name[:-4]
    )
    return Response(
        image,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": 'attachment; filename="seed.iso"',
            "Cache-Control": "no-store",
        },
    )
