"""Fine-tuning's plain rules: the job's states and their transitions, the hyperparameters and
their defaults, and the name a fine-tuned model gets. No I/O here.

States are OpenAI's: ``validating_files → queued → running → succeeded | failed | cancelled``
(a job may fail or be cancelled from any state that is not final).

Hyperparameters (``hyperparameters`` or ``method.supervised.hyperparameters``; ``"auto"`` or
absent takes the default):

=============================  =========  ============================================
name                           default    meaning
=============================  =========  ============================================
``n_epochs``                   3          passes over the training file (1-50)
``batch_size``                 1          examples per optimizer step (1-256)
``learning_rate_multiplier``   1.0        times ``BASE_LEARNING_RATE`` (0 < m ≤ 100)
``lora_rank``                  8          rank of the LoRA matrices (1-256)
``lora_alpha``                 16         LoRA scaling numerator (scale = alpha / rank)
=============================  =========  ============================================

LoRA adapts every attention and MLP projection (``q, k, v, o, gate, up, down``), dropout 0.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from neocloud.kernel.errors import IllegalTransition, InvalidRequest

BASE_LEARNING_RATE = 1e-3  # for AdamW on the LoRA weights, before the multiplier
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's suffix: up to 64 characters


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.VALIDATING_FILES: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    # running → queued: its capacity went (a spot instance preempted); it resumes from the
    # last checkpoint once it has capacity again (the fleet runner).
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
FINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
ACTIVE = (S.VALIDATING_FILES, S.QUEUED, S.RUNNING)  # what a worker claims


def check_transition(current: str, target: JobStatus, *, action: str | None = None) -> None:
    """Raise ``IllegalTransition`` (409) unless ``current → target`` is allowed."""
    allowed = TRANSITIONS[JobStatus(current)]
    if target not in allowed:
        raise IllegalTransition(
            "the fine-tuning job", current, target.value, [a.value for a in allowed], action=action
        )


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    n_epochs: int = 3
    batch_size: int = 1
    learning_rate_multiplier: float = 1.0
    lora_rank: int = 8
    lora_alpha: int = 16

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# name -> (type, low, high) of each hyperparameter a caller may set
_BOUNDS: dict[str, tuple[type, float, float]] = {
    "n_epochs": (int, 1, 50),
    "batch_size": (int, 1, 256),
    "learning_rate_multiplier": (float, 1e-6, 100),
    "lora_rank": (int, 1, 256),
    "lora_alpha": (int, 1, 4096),
}


def parse_hyperparameters(given: Any, *, param: str) -> Hyperparameters:
    """``given`` (a JSON object, or None) as ``Hyperparameters``; 400 naming the bad field."""
    if given is None:
        return Hyperparameters()
    if not isinstance(given, dict):
        raise InvalidRequest(f"{param} must be an object", code="invalid_value", param=param)
    values: dict[str, Any] = {}
    for name, value in given.items():
        where = f"{param}.{name}"
        if name not in _BOUNDS:
            known = ", ".join(_BOUNDS)
            raise InvalidRequest(
                f"unknown hyperparameter {name!r}; known: {known}",
                code="unknown_parameter",
                param=where,
            )
        if value is None or value == "auto":
            continue
        kind, low, high = _BOUNDS[name]
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            ok_type = False
        if not ok_type or not low <= value <= high:
            shown = "an integer" if kind is int else "a number"
            raise InvalidRequest(
                f"{where} must be {shown} from {low:g} to {high:g}, or 'auto'",
                code="invalid_value",
                param=where,
            )
        values[name] = kind(value)
    return Hyperparameters(**values)


def parse_method(method: Any, hyperparameters: Any) -> Hyperparameters:
    """The job's hyperparameters from ``method`` (``{"type": "supervised", "supervised":
    {"hyperparameters": {…}}}``) or the older top-level ``hyperparameters`` (not both)."""
    if method is None:
        return parse_hyperparameters(hyperparameters, param="hyperparameters")
    if not isinstance(method, dict) or method.get("type") != "supervised":
        raise InvalidRequest(
            "method.type must be 'supervised' (the only method offered)",
            code="invalid_value",
            param="method.type",
        )
    extra = set(method) - {"type", "supervised"}
    if extra:
        raise InvalidRequest(
            f"unknown field {sorted(extra)[0]!r}", code="unknown_parameter", param="method"
        )
    supervised = method.get("supervised") or {}
    if not isinstance(supervised, dict) or set(supervised) - {"hyperparameters"}:
        raise InvalidRequest(
            "method.supervised may hold only 'hyperparameters'",
            code="invalid_value",
            param="method.supervised",
        )
    inner = supervised.get("hyperparameters")
    if inner is not None and hyperparameters is not None:
        raise InvalidRequest(
            "give hyperparameters in method.supervised.hyperparameters or in hyperparameters, "
            "not both",
            code="invalid_value",
            param="hyperparameters",
        )
    return parse_hyperparameters(
        inner if inner is not None else hyperparameters,
        param="method.supervised.hyperparameters" if inner is not None else "hyperparameters",
    )


def check_suffix(suffix: Any) -> str | None:
    if suffix is None:
        return None
    if not isinstance(suffix, str) or not SUFFIX_RE.match(suffix):
        raise InvalidRequest(
            "suffix must be 1 to 64 letters, digits, '-' or '_'",
            code="invalid_value",
            param="suffix",
        )
    return suffix


def fine_tuned_model_name(base: str, org_id: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<org>:<suffix>:<the job id's last 8 characters>`` (OpenAI's shape; the
    suffix may be empty): the same for every attempt of one job."""
    return f"ft:{base}:{org_id}:{suffix or ''}:{job_id[-8:]}"


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return max(1, -(-examples // batch_size))
