"""``GET /boot/seeds/{token}.iso``: the cloud-init seed a node's BMC mounts (``fleet.seeds``).

Outside ``/api/v1``: a BMC sends no API key, and the token in the path is the credential (one
boot's, 256 bits, expiring). Unknown, expired and discarded tokens all answer 404. One byte
range may be asked for (BMCs that stream virtual media read it by ranges). The path is redacted
from the server's access log, which would otherwise keep the token.
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
    headers = {
        "Content-Disposition": 'attachment; filename="seed.iso"',
        "Cache-Control": "no-store",
        "Accept-Ranges": "bytes",
    }
    wanted = request.headers.get("range")
    if wanted is None:
        return Response(image, media_type="application/octet-stream", headers=headers)
    span = byte_range(wanted, len(image))
    if span is None:
        headers["Content-Range"] = f"bytes */{len(image)}"
        return Response(status_code=416, headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{len(image)}"
    return Response(
        image[start : end + 1],
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range ``header`` asks for (``bytes=a-b``, ``a-``, ``-n``), inclusive and
    clipped to ``size``; None when it cannot be served (several ranges, or none inside)."""
    match = _RANGE.match(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        return None if n == 0 else (max(size - n, 0), size - 1)
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    return None if start > end or start >= size else (start, end)
