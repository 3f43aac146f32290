"""Tenancy rules with no I/O: API key format and hashing, roles, emails, slugs and quotas."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from neocloud.kernel.auth import Role
from neocloud.kernel.errors import (
    AuthenticationFailed,
    PermissionDenied,
    QuotaExceeded,
    ValidationFailed,
)

KEY_SCHEME = "nck_"
KEY_ENTROPY_BYTES = 32  # 256 bits: a fast hash (sha256) is enough for tokens this random
KEY_PREFIX_LENGTH = 12  # characters of the secret kept in clear, to tell keys apart
KEY_MAX_LENGTH = 128  # longer tokens are rejected before hashing

OPERATOR_ORG_SLUG = "operator"
OPERATOR_ADMIN_EMAIL = "admin@operator.local"

GPU_MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
MAX_QUOTA_GPUS = 1_000_000

_SLUG_RE = re.compile(SLUG_PATTERN)
_EMAIL_RE = re.compile(EMAIL_PATTERN)
_GPU_MODEL_RE = re.compile(GPU_MODEL_PATTERN)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made API key: ``secret`` is shown once; only ``hash`` and ``prefix`` are kept."""

    secret: str
    hash: str
    prefix: str


def generate_key() -> NewKey:
    secret = KEY_SCHEME + secrets.token_urlsafe(KEY_ENTROPY_BYTES)
    return NewKey(secret=secret, hash=hash_key(secret), prefix=secret[:KEY_PREFIX_LENGTH])


def hash_key(secret: str) -> str:
    """The sha256 hex digest of the whole secret, as stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_key_format(token: str) -> None:
    """Reject tokens that cannot be keys before touching the database."""
    if not token.startswith(KEY_SCHEME) or len(token) > KEY_MAX_LENGTH or not token.isascii():
        raise AuthenticationFailed("the API key is not valid", code="invalid_api_key")


def effective_role(membership_role: Role, key_role: Role | None) -> Role:
    """A key acts with its user's membership role, capped by the role set on the key."""
    if key_role is None or membership_role.rank <= key_role.rank:
        return membership_role
    return key_role


def check_key_role(requested: Role | None, holder_role: Role) -> None:
    """A key may not carry a role above its holder's membership role."""
    if requested is not None and requested.rank > holder_role.rank:
        raise PermissionDenied(
            f"a key cannot have role {requested.value}: its user's role is {holder_role.value}",
            code="role_above_membership",
            param="role",
        )


def check_may_manage_keys(actor_role: Role) -> None:
    """Viewers make no keys and revoke none but the one they call with: a key is a power to
    act, and a viewer's role is to read."""
    if not actor_role.at_least(Role.MEMBER):
        raise PermissionDenied(
            f"this needs role member or higher; the key's role is {actor_role.value}",
            code="insufficient_role",
        )


def check_acts_for(actor_role: Role, holder_role: Role, *, param: str = "user_id") -> None:
    """No one acts as a higher-ranked member: making a key for, or revoking a key of, someone
    whose role ranks above the caller's (effective) role is refused."""
    if holder_role.rank > actor_role.rank:
        raise PermissionDenied(
            f"that member acts as {holder_role.value}, above your key's role "
            f"({actor_role.value}): no one acts for a higher-ranked member",
            code="insufficient_role",
            param=param,
        )


def check_can_grant(granter: Role, granted: Role, *, operator_admin: bool = False) -> None:
    """Only an owner may make owners; an admin may grant admin and below."""
    if operator_admin:
        return
    if granted is Role.OWNER and granter is not Role.OWNER:
        raise PermissionDenied(
            "only an owner may grant the owner role", code="insufficient_role", param="role"
        )


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 254 or not _EMAIL_RE.match(value):
        raise ValidationFailed(
            f"{email!r} is not an email address", code="invalid_email", param="email"
        )
    return value


def slugify(name: str) -> str:
    """A slug from a name: lowercase letters, digits and single hyphens, at most 63 chars."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug or "org"


def check_slug(slug: str) -> str:
    if not _SLUG_RE.match(slug):
        raise ValidationFailed(
            "a slug is 1-63 lowercase letters, digits and inner hyphens",
            code="invalid_slug",
            param="slug",
        )
    return slug


def check_gpu_model(gpu_model: str) -> str:
    if not _GPU_MODEL_RE.match(gpu_model):
        raise ValidationFailed(
            "a GPU model is 1-64 letters, digits, '.', '_' or '-' (e.g. H100-SXM-80GB)",
            code="invalid_gpu_model",
            param="gpu_model",
        )
    return gpu_model


def resolve_quota(default: int | None, override: int | None) -> tuple[int | None, str | None]:
    """The effective limit in GPUs and where it comes from: an org override beats the default."""
    if override is not None:
        return override, "override"
    if default is not None:
        return default, "default"
    return None, None


def check_quota(limit: int | None, usage: int, requested: int, *, gpu_model: str = "") -> None:
    """Raise ``QuotaExceeded`` if ``usage + requested`` GPUs would pass ``limit``.

    ``limit`` None means no quota is registered for the model: nothing is allowed.
    """
    allowed = 0 if limit is None else limit
    if usage + requested <= allowed:
        return
    raise QuotaExceeded(
        f"quota for {gpu_model or 'this GPU model'} is {allowed} GPUs; {usage} in use, "
        f"{requested} requested",
        param="gpu_model",
        details={"gpu_model": gpu_model, "limit": allowed, "usage": usage, "requested": requested},
    )
