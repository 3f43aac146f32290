"""Batch states and what each allows (pure).

``validating → in_progress → finalizing → completed``; ``failed`` when the input does not
validate; ``expired`` when the completion window passes first (what finished is in the output
file, the rest in the error file as ``batch_expired``); ``cancelling → cancelled`` (the same,
as ``batch_cancelled``). A batch still validating is cancelled at once: nothing of it ran.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from enum import StrEnum

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
METADATA_MAX_PAIRS = 16  # OpenAI's bounds on ``metadata``
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512
LIST_LIMIT_MAX = 100  # OpenAI's bound on /v1/batches?limit


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


DONE = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
# What a worker picks up: everything not done.
WORKABLE = tuple(s.value for s in BatchStatus if s not in DONE)


def after_cancel(status: BatchStatus) -> BatchStatus | None:
    """The state a cancel moves ``status`` to; None when a cancel is refused (already done)."""
    if status in DONE:
        return None
    if status is BatchStatus.VALIDATING:
        return BatchStatus.CANCELLED
    return BatchStatus.CANCELLING


def request_id(batch_id: str, custom_id: str) -> str:
    """A batch request's id: fixed by the batch and the ``custom_id``, so the usage of a request
    done twice (a worker killed after billing it, before recording it) is billed once."""
    digest = hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"
