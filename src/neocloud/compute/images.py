"""The operator's image catalog, and what a new instance boots with.

Every authenticated caller reads the catalog; operator admins publish an image, change its
description, drivers or which image is the default, and retire one (no new instances take it;
those running keep it). Names are never reused, so an instance's ``image`` always says what it
was created with. Once any image exists, exactly one is the default: publishing the first makes
it the default, and the default cannot be retired until another is made the default.

``resolve_boot`` turns a create request's image, SSH key ids, key lines and user data into what
is stored on the instance (inside the create's transaction, so bad input stores nothing).

The ssh driver does not reimage: it runs on the OS the operator installed, which the built-in
``host-os`` image stands for. Images that install an OS are for drivers that can do so (the
simulator pretends; ``redfish`` is the next issue's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import boot
from neocloud.compute.tables import ImageRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.tenancy.ssh_key_format import ParsedKey
from neocloud.tenancy.ssh_keys import public_keys_in

DEFAULT_LOGIN_USER = "ubuntu"


@dataclass(frozen=True)
class ImageSpec:
    """An image as the operator publishes it (already shaped by the wire schema)."""

    name: str
    os: str
    cuda_driver: str | None = None
    cuda_toolkit: str | None = None
    login_user: str = DEFAULT_LOGIN_USER
    cloud_init: bool = False
    drivers: list[str] = field(default_factory=lambda: ["sim"])
    is_default: bool = False
    description: str = ""


@dataclass(frozen=True)
class ImageChanges:
    """What an operator may change on a published image; None leaves a field as it is. What
    an image *is* (OS, CUDA, login user, cloud-init) is fixed: publish a new name instead."""

    description: str | None = None
    drivers: list[str] | None = None
    is_default: bool | None = None


BUILTIN: tuple[ImageSpec, ...] = (
    ImageSpec(
        name="ubuntu-22.04-cuda-12.4",
        os="Ubuntu 22.04",
        cuda_driver="550",
        cuda_toolkit="12.4",
        cloud_init=True,
        drivers=["sim", "redfish"],
        is_default=True,
        description=(
            "Ubuntu 22.04 LTS with NVIDIA driver 550 and CUDA 12.4, cloud-init, login user "
            "ubuntu. Installed on nodes whose driver reimages them (the simulator pretends "
            "to; redfish is planned); the ssh driver does not reimage, see host-os."
        ),
    ),
    ImageSpec(
        name="ubuntu-24.04-cuda-12.8",
        os="Ubuntu 24.04",
        cuda_driver="570",
        cuda_toolkit="12.8",
        cloud_init=True,
        drivers=["sim", "redfish"],
        description=(
            "Ubuntu 24.04 LTS with NVIDIA driver 570 and CUDA 12.8, cloud-init, login user "
            "ubuntu. For drivers that reimage a node (the simulator pretends to; redfish is "
            "planned)."
        ),
    ),
    ImageSpec(
        name="host-os",
        os="as installed on the node",
        cloud_init=False,
        drivers=["ssh", "sim"],
        description=(
            "The OS already installed on a server the ssh driver runs (no reimage): the "
            "operator's OS, drivers and CUDA as they are on the node. The driver creates the "
            "login user with your keys and runs a #! user data script; there is no cloud-init."
        ),
    ),
)


def seed_catalog(*, db: Database, clock: Clock) -> list[str]:
    """Publish the built-in images into an empty catalog (first start); an operator's
    catalog is left as it is. Returns the names published now."""
    now = clock.now()
    try:
        with db.transaction() as s:
            if s.scalar(sa.select(ImageRow.name).limit(1)) is not None:
                return []
            for spec in BUILTIN:
                s.add(_row(spec, now, default=spec.is_default))
    except Conflict:  # another process starting at the same time seeded it first
        return []
    return [spec.name for spec in BUILTIN]


# ------------------------------------------------------------------------------------- catalog


def list_images(
    *, db: Database, include_retired: bool = False, limit: int, after: str | None
) -> Page[ImageRow]:
    """The catalog by name (without retired images unless asked). Any authenticated caller."""
    stmt = sa.select(ImageRow)
    if not include_retired:
        stmt = stmt.where(ImageRow.retired_at.is_(None))
    with db.transaction() as s:
        return paginate(s, stmt, ImageRow.name, limit=limit, after=after)


def get_image(*, db: Database, name: str) -> ImageRow:
    """One image, retired or not (404 ``image_not_found``)."""
    with db.transaction() as s:
        return _get(s, name)


def publish_image(*, db: Database, clock: Clock, actor: Principal, spec: ImageSpec) -> ImageRow:
    """Add an image (operator admins). 409 ``image_exists`` for a name the catalog has or
    had. The first image, or one published with ``is_default``, becomes the default."""
    actor.require_operator(write=True)
    boot.check_image_name(spec.name)
    boot.check_login_user(spec.login_user)
    drivers = boot.check_drivers(spec.drivers)
    now = clock.now()
    with db.transaction() as s:
        if s.get(ImageRow, spec.name) is not None:
            raise Conflict(
                f"the catalog has (or had) an image named {spec.name}; names are not reused, "
                "so an instance's image always says what it was created with",
                code="image_exists",
                param="name",
            )
        current = _default(s)
        row = _row(replace(spec, drivers=drivers), now, default=False)
        s.add(row)
        s.flush()
        if spec.is_default or current is None:
            _make_default(s, row, current, now)
    return row


def update_image(
    *, db: Database, clock: Clock, actor: Principal, name: str, changes: ImageChanges
) -> ImageRow:
    """Change an image's description or drivers, or make it the default (operator admins)."""
    actor.require_operator(write=True)
    drivers = None if changes.drivers is None else boot.check_drivers(changes.drivers)
    if changes.is_default is False:
        raise ValidationFailed(
            "is_default can only be set to true: make another image the default instead",
            code="invalid_default",
            param="is_default",
        )
    now = clock.now()
    with db.transaction() as s:
        row = _get(s, name, lock=True)
        if row.retired_at is not None:
            raise Conflict(f"image {name} is retired", code="image_retired", param="name")
        if changes.description is not None:
            row.description = changes.description
        if drivers is not None:
            row.drivers = drivers
        if changes.is_default and not row.is_default:
            _make_default(s, row, _default(s), now)
        row.updated_at = now
    return row


def retire_image(*, db: Database, clock: Clock, actor: Principal, name: str) -> ImageRow:
    """Retire an image (operator admins): no new instance takes it; those running keep it.
    Retiring a retired image changes nothing; the default is 409 ``image_is_default``."""
    actor.require_operator(write=True)
    now = clock.now()
    with db.transaction() as s:
        row = _get(s, name, lock=True)
        if row.retired_at is not None:
            return row
        if row.is_default:
            raise Conflict(
                f"image {name} is the default; make another image the default first",
                code="image_is_default",
                param="name",
            )
        row.retired_at = row.updated_at = now
    return row


def _row(spec: ImageSpec, now: datetime, *, default: bool) -> ImageRow:
    return ImageRow(
        name=spec.name,
        os=spec.os,
        cuda_driver=spec.cuda_driver,
        cuda_toolkit=spec.cuda_toolkit,
        login_user=spec.login_user,
        cloud_init=spec.cloud_init,
        drivers=list(spec.drivers),
        is_default=True if default else None,
        description=spec.description,
        created_at=now,
        updated_at=now,
    )


def find_image(s: Session, name: str) -> ImageRow | None:
    """The image ``name`` (retired or not) inside the caller's transaction, or None: for the
    reconciler, which hands the driver the image's name and whether it has cloud-init."""
    return s.get(ImageRow, name)


def _get(s: Session, name: str, *, lock: bool = False) -> ImageRow:
    stmt = sa.select(ImageRow).where(ImageRow.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).first()
    if row is None:
        raise NotFound(f"no image {name[:64]}", code="image_not_found", param="name")
    return row


def _default(s: Session) -> ImageRow | None:
    return s.scalars(sa.select(ImageRow).where(ImageRow.is_default.is_(True))).first()


def _make_default(s: Session, row: ImageRow, current: ImageRow | None, now: datetime) -> None:
    # Clear the old default first: the unique constraint on is_default checks each statement.
    if current is not None and current.name != row.name:
        current.is_default = None
        current.updated_at = now
        s.flush()
    row.is_default = True


# ---------------------------------------------------------------------------- what boots where


@dataclass(frozen=True)
class BootRequest:
    """What a create asks for; ``ssh_keys`` are the inline lines, already parsed."""

    image: str | None = None
    ssh_key_ids: Sequence[str] = ()
    ssh_keys: Sequence[ParsedKey] = ()
    user_data: str | None = None
    gpu_model: str | None = None  # the catalog id; the image must run on its nodes' drivers


@dataclass(frozen=True)
class Boot:
    """What is stored on the instance: the image (None only while the catalog is empty), its
    login user, the key lines to install (org keys then inline, each once), the key ids."""

    image: str | None
    login_user: str
    ssh_keys: list[str]
    ssh_key_ids: list[str]
    user_data: str | None


def resolve_boot(s: Session, *, org_id: str, request: BootRequest) -> Boot:
    """Check a create's image, key ids and user data against the catalog and the org's keys
    (422 naming ``image``, ``ssh_key_ids`` or ``user_data``), inside the create's transaction."""
    image = _image_for(s, request.image)
    if image is not None and request.gpu_model is not None:
        image = _runnable(s, image, request.gpu_model, named=request.image is not None)
    user_data = boot.check_user_data(
        request.user_data,
        image=image.name if image else None,
        cloud_init=bool(image and image.cloud_init),
    )
    ids = list(dict.fromkeys(request.ssh_key_ids))
    resolved = public_keys_in(s, org_id=org_id, ids=ids)
    return Boot(
        image=image.name if image else None,
        login_user=image.login_user if image else DEFAULT_LOGIN_USER,
        ssh_keys=boot.merge_keys(resolved, request.ssh_keys),
        ssh_key_ids=ids,
        user_data=user_data,
    )


def _runnable(s: Session, image: ImageRow, gpu_model: str, *, named: bool) -> ImageRow:
    """The image, if a driver of the model's nodes can run it. Otherwise: a named image is
    refused (422 naming ``image``); for the default, the first image by name that those
    drivers run is taken (an ssh-only fleet boots ``host-os``), and the instance says so.
    No nodes of the model yet: the image stands (placement decides later)."""
    drivers = set(
        s.scalars(
            sa.select(NodeRow.driver)
            .where(NodeRow.gpu_model == gpu_model, NodeRow.state != NodeState.RETIRED.value)
            .distinct()
        )
    )
    if not drivers or drivers & set(image.drivers):
        return image
    if not named:
        for other in s.scalars(
            sa.select(ImageRow).where(ImageRow.retired_at.is_(None)).order_by(ImageRow.name)
        ):
            if drivers & set(other.drivers):
                return other
    raise ValidationFailed(
        f"image {image.name} runs on {', '.join(sorted(image.drivers)) or 'no driver'} nodes; "
        f"{gpu_model} nodes here run {', '.join(sorted(drivers))} "
        "(GET /api/v1/images lists what each image runs on)",
        code="image_not_runnable",
        param="image",
    )


def _image_for(s: Session, name: str | None) -> ImageRow | None:
    """The named image (not retired), or the default when none is named (None only when the
    catalog is empty: the machine then runs whatever its node has)."""
    if name is None:
        return _default(s)
    row = s.get(ImageRow, name)
    if row is None:
        raise ValidationFailed(
            f"no image {name[:64]} in the catalog (GET /api/v1/images lists them)",
            code="image_not_found",
            param="image",
        )
    if row.retired_at is not None:
        raise ValidationFailed(
            f"image {name} is retired and takes no new instances; pick another "
            "(GET /api/v1/images)",
            code="image_retired",
            param="image",
        )
    return row
