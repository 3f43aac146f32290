"""Tenancy rules, no database."""

from __future__ import annotations

import pytest

from neocloud.kernel.auth import Role
from neocloud.kernel.errors import (
    AuthenticationFailed,
    PermissionDenied,
    QuotaExceeded,
    ValidationFailed,
)
from neocloud.tenancy import domain


def test_generated_key_has_scheme_prefix_and_hash() -> None:
    made = domain.generate_key()
    assert made.secret.startswith("nck_")
    assert len(made.secret) >= 4 + 43  # 32 bytes of url-safe base64
    assert made.prefix == made.secret[:12]
    assert made.hash == domain.hash_key(made.secret)
    assert len(made.hash) == 64
    assert made.secret not in made.hash
    assert domain.generate_key().secret != made.secret


@pytest.mark.parametrize("token", ["abc", "sk-123", "nck_" + "x" * 200, "nck_é"])
def test_malformed_tokens_are_rejected_before_lookup(token: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        domain.check_key_format(token)
    assert info.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("member", "cap", "expected"),
    [
        (Role.OWNER, None, Role.OWNER),
        (Role.OWNER, Role.VIEWER, Role.VIEWER),
        (Role.VIEWER, Role.ADMIN, Role.VIEWER),  # demoting the user caps every key at once
        (Role.ADMIN, Role.ADMIN, Role.ADMIN),
    ],
)
def test_effective_role_is_membership_capped_by_key(
    member: Role, cap: Role | None, expected: Role
) -> None:
    assert domain.effective_role(member, cap) is expected


def test_key_role_cannot_exceed_membership() -> None:
    domain.check_key_role(Role.MEMBER, Role.ADMIN)
    with pytest.raises(PermissionDenied) as info:
        domain.check_key_role(Role.OWNER, Role.ADMIN)
    assert info.value.param == "role"


def test_only_owners_grant_owner() -> None:
    domain.check_can_grant(Role.OWNER, Role.OWNER)
    domain.check_can_grant(Role.ADMIN, Role.ADMIN)
    domain.check_can_grant(Role.VIEWER, Role.OWNER, operator_admin=True)
    with pytest.raises(PermissionDenied):
        domain.check_can_grant(Role.ADMIN, Role.OWNER)


def test_emails_are_normalized_and_validated() -> None:
    assert domain.normalize_email("  Ada@Example.COM ") == "ada@example.com"
    with pytest.raises(ValidationFailed) as info:
        domain.normalize_email("not-an-email")
    assert info.value.code == "invalid_email"


def test_slugs() -> None:
    assert domain.slugify("Acme Labs, Inc.") == "acme-labs-inc"
    assert domain.slugify("!!!") == "org"
    assert domain.check_slug("acme-1") == "acme-1"
    for bad in ("-acme", "Acme", "a" * 64, "acme_1"):
        with pytest.raises(ValidationFailed):
            domain.check_slug(bad)


def test_gpu_model_pattern() -> None:
    assert domain.check_gpu_model("H100-SXM-80GB") == "H100-SXM-80GB"
    for bad in ("", "H100/80", "x" * 65, "-H100"):
        with pytest.raises(ValidationFailed):
            domain.check_gpu_model(bad)


@pytest.mark.parametrize(
    ("default", "override", "expected"),
    [
        (None, None, (None, None)),
        (8, None, (8, "default")),
        (8, 64, (64, "override")),
        (None, 0, (0, "override")),  # an override of zero forbids the model
    ],
)
def test_quota_resolution(
    default: int | None, override: int | None, expected: tuple[int | None, str | None]
) -> None:
    assert domain.resolve_quota(default, override) == expected


def test_check_quota_allows_up_to_the_limit() -> None:
    domain.check_quota(16, 8, 8, gpu_model="H100-SXM-80GB")


def test_check_quota_refuses_with_reasons() -> None:
    with pytest.raises(QuotaExceeded) as info:
        domain.check_quota(16, 12, 8, gpu_model="H100-SXM-80GB")
    assert info.value.status == 403
    assert info.value.details == {
        "gpu_model": "H100-SXM-80GB",
        "limit": 16,
        "usage": 12,
        "requested": 8,
    }


def test_no_registered_quota_allows_nothing() -> None:
    with pytest.raises(QuotaExceeded) as info:
        domain.check_quota(None, 0, 1, gpu_model="B200")
    assert info.value.details["limit"] == 0
