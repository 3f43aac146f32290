"""Who may act in an org: ``Principal.require_org_role``."""

import pytest

from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.errors import NotFound, PermissionDenied


def _p(org: str, role: Role, *, operator: bool = False) -> Principal:
    return Principal("key_1", "usr_1", org, role, operator)


def test_a_tenant_asking_for_another_org_is_told_it_does_not_exist() -> None:
    with pytest.raises(NotFound) as caught:
        _p("org_a", Role.OWNER).require_org_role("org_b", Role.VIEWER)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        404,
        "org_not_found",
        "org_id",
    )


def test_roles_in_one_s_own_org_and_operators() -> None:
    _p("org_a", Role.MEMBER).require_org_role("org_a", Role.MEMBER)
    with pytest.raises(PermissionDenied) as low:
        _p("org_a", Role.VIEWER).require_org_role("org_a", Role.MEMBER)
    assert low.value.code == "insufficient_role"
    _p("org_op", Role.ADMIN, operator=True).require_org_role("org_b", Role.OWNER)
    with pytest.raises(PermissionDenied) as staff:  # operator staff know every org exists
        _p("org_op", Role.MEMBER, operator=True).require_org_role("org_b", Role.VIEWER)
    assert (staff.value.status, staff.value.code) == (403, "operator_admin_only")
