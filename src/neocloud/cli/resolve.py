"""Names wherever the CLI takes an id: ``neocloud instances get train-1``.

An argument that is an id of the expected kind is used as it is; anything else is looked up
through the API's list endpoint and must name exactly one object. None is the API's not-found
error; several is an error listing the ids that match, so the user can pick one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from neocloud.client import ApiError
from neocloud.kernel.ids import PREFIXES, is_id


def resolve(
    arg: str,
    *,
    prefix: str,
    candidates: Callable[[str], Iterable[dict[str, Any]]],
    key: str = "name",
) -> str:
    """The id of the one object whose ``key`` is ``arg`` (or ``arg`` itself if it is an id).

    ``candidates(arg)`` lists the objects to look in (a list endpoint, filtered by name where
    the API can). Raises ``ApiError``: ``<kind>_not_found`` (404) or ``ambiguous_name`` (400,
    with the matching ids in ``details["ids"]``).
    """
    if is_id(arg, prefix):
        return arg
    kind = PREFIXES[prefix]
    matches = [row["id"] for row in candidates(arg) if row.get(key) == arg]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise ApiError(
            404,
            "not_found_error",
            f"{kind.replace(' ', '_')}_not_found",
            f"no {kind} has the id or {key} {arg!r}",
        )
    raise ApiError(
        400,
        "invalid_request_error",
        "ambiguous_name",
        f"{len(matches)} {kind}s have the {key} {arg!r}: name one by its id",
        details={"ids": matches},
    )
