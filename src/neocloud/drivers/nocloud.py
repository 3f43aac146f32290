"""cloud-init NoCloud seed images: what a freshly booted server learns about itself.

A seed is an ISO 9660 image (with Joliet and Rock Ridge names, so every firmware and kernel
reads the lower-case names) whose volume id is ``cidata``; cloud-init's NoCloud datasource finds
it on any attached CD and reads:

* ``meta-data``: ``instance-id`` (the workload's id, so a new workload is a new instance for
  cloud-init and its once-per-instance modules run again) and ``local-hostname``;
* ``user-data``: a ``#cloud-config`` that creates the login user with its SSH public keys
  (passwordless sudo when the node's setting says so, password login off), merged with the
  tenant's own ``#cloud-config``; a tenant's ``#!`` script goes beside it as a MIME multipart
  part (``text/x-shellscript``), which cloud-init runs once per instance, as root;
* ``network-config`` (optional): network configuration version 2, as given.

Merging a tenant's ``#cloud-config`` (``merge_cloud_config``): keys the platform did not set are
the tenant's; where both set a list (``users``, ``ssh_authorized_keys``, ``runcmd``,
``packages``, …) the platform's items come first and the tenant's follow; any other key the
tenant sets wins. The tenant cannot remove the login user the platform creates.

The image is built in memory (``build_seed_iso``; a few hundred KiB, mostly zeros) and read
back by ``read_seed_iso`` (tests, and operators debugging a seed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pycdlib
import yaml

from neocloud.drivers.base import Login

VOLUME_ID = "cidata"
CLOUD_CONFIG = "#cloud-config"
SCRIPT = "#!"
# ISO 9660 level-3 names (8.3, upper case) beside the Joliet and Rock Ridge names cloud-init reads.
FILES = {
    "meta-data": "/METADATA.;1",
    "user-data": "/USERDATA.;1",
    "network-config": "/NETWORKC.;1",
}


class SeedError(ValueError):
    """User data that cannot go into a seed (not a script nor a ``#cloud-config`` mapping)."""


@dataclass(frozen=True, slots=True)
class Seed:
    """What a seed carries. ``user_data``: the tenant's (``#!`` script or ``#cloud-config``,
    already checked to be at most 64 KiB), or None; ``network_config``: a version-2 YAML
    document, or None (cloud-init then configures DHCP on the first interface)."""

    instance_id: str
    hostname: str
    login: Login
    user_data: str | None = None
    network_config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # platform cloud-config keys


def meta_data(seed: Seed) -> str:
    """The ``meta-data`` document (YAML)."""
    doc = {"instance-id": seed.instance_id, "local-hostname": seed.hostname}
    return yaml.safe_dump(doc, sort_keys=False)


def platform_cloud_config(seed: Seed) -> dict[str, Any]:
    """The platform's own ``#cloud-config``: the login user and its keys, no password login."""
    login = seed.login
    user: dict[str, Any] = {
        "name": login.user,
        "ssh_authorized_keys": list(login.public_keys),
        "lock_passwd": True,
    }
    if login.user != "root":
        user["shell"] = "/bin/bash"
        if login.sudo:
            user["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
    doc: dict[str, Any] = {
        "hostname": seed.hostname,
        "users": [user],
        "ssh_pwauth": False,
    }
    if login.user == "root":
        doc["disable_root"] = False  # the operator's login (a reimage seed) is root's key
    doc.update(seed.extra)
    return doc


def merge_cloud_config(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The platform's cloud-config with the tenant's merged in (rules in the module docstring)."""
    merged = dict(ours)
    for key, value in theirs.items():
        mine = merged.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            merged[key] = [*mine, *value]
        else:
            merged[key] = value
    return merged


def _tenant_cloud_config(text: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"user data: #cloud-config is not YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SeedError("user data: #cloud-config must be a YAML mapping")
    return doc


def user_data(seed: Seed) -> str:
    """The ``user-data`` document: a ``#cloud-config``, or a MIME multipart message when the
    tenant's user data is a script (the cloud-config part first, the script second)."""
    ours = platform_cloud_config(seed)
    text = seed.user_data
    first = "" if text is None else text.split("\n", 1)[0].rstrip("\r")
    if text is not None and first.rstrip() == CLOUD_CONFIG:
        ours = merge_cloud_config(ours, _tenant_cloud_config(text))
    elif text is not None and not first.startswith(SCRIPT):
        raise SeedError("user data must start with #! or #cloud-config")
    config = CLOUD_CONFIG + "\n" + yaml.safe_dump(ours, sort_keys=False)
    if text is None or not first.startswith(SCRIPT):
        return config
    message = MIMEMultipart(boundary="==neocloud-seed==")
    message.attach(MIMEText(config, "cloud-config", "utf-8"))
    script = MIMEText(text, "x-shellscript", "utf-8")
    script.add_header("Content-Disposition", "attachment", filename="user-data.sh")
    message.attach(script)
    return message.as_string()


def seed_files(seed: Seed) -> dict[str, bytes]:
    """The seed's files by name (``meta-data``, ``user-data``, ``network-config`` if any)."""
    files = {
        "meta-data": meta_data(seed).encode("utf-8"),
        "user-data": user_data(seed).encode("utf-8"),
    }
    if seed.network_config is not None:
        files["network-config"] = seed.network_config.encode("utf-8")
    return files


def build_seed_iso(seed: Seed) -> bytes:
    """The NoCloud seed image (ISO 9660 + Joliet + Rock Ridge, volume id ``cidata``)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    try:
        for name, data in seed_files(seed).items():
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                FILES[name],
                rr_name=name,
                joliet_path=f"/{name}",
                file_mode=0o100444,
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_seed_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    """A seed image's volume id and its files by Joliet name."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        volume = iso.pvd.volume_identifier.decode("ascii").strip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(joliet_path="/"):
            name = child.file_identifier().decode("utf-16_be")
            if name in (".", "..") or child.is_dir():
                continue
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path=f"/{name}")
            files[name] = buf.getvalue()
    finally:
        iso.close()
    return volume, files
