"""CLI for the image catalog: ``neocloud images list|get|publish|update|retire``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from neocloud.cli.output import Column, api_call, print_list, print_object, take
from neocloud.cli.state import STATE

images_app = typer.Typer(
    help="OS images instances and clusters boot (the operator publishes them).",
    no_args_is_help=True,
)
APPS: dict[str, typer.Typer] = {"images": images_app}

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
ImageArg = Annotated[str, typer.Argument(help="Image name, e.g. ubuntu-22.04-cuda-12.4")]
DriverOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--driver", help="A driver that can install or run it (sim, ssh, redfish); repeatable"
    ),
]

IMAGE_COLUMNS: list[Column] = [
    ("NAME", "name"),
    ("OS", "os"),
    ("CUDA DRIVER", "cuda_driver"),
    ("CUDA", "cuda_toolkit"),
    ("USER", "login_user"),
    ("CLOUD-INIT", lambda i: "yes" if i["cloud_init"] else "no"),
    ("DRIVERS", lambda i: ",".join(i["drivers"])),
    ("DEFAULT", lambda i: "*" if i["is_default"] else ""),
    ("RETIRED", "retired_at"),
]


@images_app.command("list")
@api_call
def images_list(
    include_retired: Annotated[
        bool, typer.Option("--retired", help="Also list retired images")
    ] = False,
    as_json: Json = False,
) -> None:
    """The catalog: OS, CUDA driver and toolkit, login user, cloud-init, drivers, default."""
    rows, more = take(STATE.client().images.iter(include_retired=include_retired), None)
    print_list(rows, IMAGE_COLUMNS, as_json=as_json, more=more)


@images_app.command("get")
@api_call
def images_get(name: ImageArg, as_json: Json = False) -> None:
    """One image, with its description."""
    print_object(STATE.client().images.get(name), as_json=as_json)


@images_app.command("publish")
@api_call
def images_publish(
    name: ImageArg,
    os: Annotated[str, typer.Option("--os", help="The OS, e.g. 'Ubuntu 22.04'")],
    driver: DriverOpt = None,
    cuda_driver: Annotated[
        str | None, typer.Option("--cuda-driver", help="NVIDIA driver version, e.g. 550")
    ] = None,
    cuda_toolkit: Annotated[
        str | None, typer.Option("--cuda-toolkit", help="CUDA toolkit version, e.g. 12.4")
    ] = None,
    login_user: Annotated[
        str | None, typer.Option("--login-user", help="The tenant's login user (default ubuntu)")
    ] = None,
    cloud_init: Annotated[
        bool, typer.Option("--cloud-init", help="The image runs cloud-init (#cloud-config)")
    ] = False,
    default: Annotated[bool, typer.Option("--default", help="Make it the default image")] = False,
    description: Annotated[
        str | None, typer.Option("--description", help="What it is, for tenants")
    ] = None,
    as_json: Json = False,
) -> None:
    """Publish an image (operator admins); names are never reused."""
    if not driver:
        raise typer.BadParameter("give at least one --driver", param_hint="--driver")
    image = STATE.client().images.publish(
        name,
        os=os,
        drivers=driver,
        cuda_driver=cuda_driver,
        cuda_toolkit=cuda_toolkit,
        login_user=login_user,
        cloud_init=cloud_init,
        is_default=default,
        description=description,
    )
    print_object(image, as_json=as_json)


@images_app.command("update")
@api_call
def images_update(
    name: ImageArg,
    driver: DriverOpt = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default image")] = False,
    description: Annotated[
        str | None, typer.Option("--description", help="A new description")
    ] = None,
    as_json: Json = False,
) -> None:
    """Change an image's description or drivers, or make it the default (operator admins)."""
    image = STATE.client().images.update(
        name, description=description, drivers=driver, is_default=True if default else None
    )
    print_object(image, as_json=as_json)


@images_app.command("retire")
@api_call
def images_retire(name: ImageArg, as_json: Json = False) -> None:
    """Retire an image (operator admins): no new instances; running ones keep it."""
    image: dict[str, Any] = STATE.client().images.retire(name)
    print_object(image, as_json=as_json)
