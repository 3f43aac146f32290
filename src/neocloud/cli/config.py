"""CLI profiles: where the API is and which key to use, in the user's config directory.

Resolution order: ``--profile`` (or ``NEOCLOUD_PROFILE``) picks a saved profile, ``default``
when neither names one; the environment variables ``NEOCLOUD_API_URL`` and ``NEOCLOUD_API_KEY``
override its fields (with both set, no profile is needed). ``NEOCLOUD_CONFIG`` moves the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_dir

from neocloud.client import Client
from neocloud.client.base import DEFAULT_URL

DEFAULT_PROFILE = "default"

ENV_HELP = (
    "Environment: NEOCLOUD_API_URL and NEOCLOUD_API_KEY override the profile's URL and key "
    "(both set: no login needed); NEOCLOUD_PROFILE names the profile (as --profile does); "
    "NEOCLOUD_CONFIG is the profiles file (default: profiles.json in your user config "
    "directory)."
)


class ProfileError(Exception):
    """The CLI cannot tell which API or key to use; ``message`` says what to run."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Profile:
    name: str
    url: str
    api_key: str | None
    from_env: bool = False  # the key came from NEOCLOUD_API_KEY, not the saved profile


def config_path() -> Path:
    override = os.environ.get("NEOCLOUD_CONFIG")
    return Path(override) if override else Path(user_config_dir("neocloud")) / "profiles.json"


def load_profiles() -> dict[str, dict[str, str]]:
    path = config_path()
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


def save_profile(profile: Profile) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = load_profiles()
    profiles[profile.name] = {"url": profile.url, "api_key": profile.api_key or ""}
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: never write keys into a file someone else made
    # Readable by its owner from the first byte: the file holds API keys.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(profiles, indent=2))
    tmp.replace(path)
    return path


def profile_name(explicit: str | None) -> str:
    """The profile in use: ``--profile``, else ``NEOCLOUD_PROFILE``, else ``default``."""
    return explicit or os.environ.get("NEOCLOUD_PROFILE") or DEFAULT_PROFILE


def find_profile(name: str) -> Profile | None:
    """The saved profile ``name`` as stored (no environment overrides), or ``None``."""
    saved = load_profiles().get(name)
    if saved is None:
        return None
    return Profile(name, saved.get("url") or DEFAULT_URL, saved.get("api_key") or None)


def resolve(explicit: str | None) -> Profile:
    """The API URL and key to use; raises ``ProfileError`` when a named profile is not saved
    or no key is known at all (nothing logged in, no ``NEOCLOUD_API_KEY``)."""
    name = profile_name(explicit)
    named = explicit is not None or "NEOCLOUD_PROFILE" in os.environ
    saved = find_profile(name)
    env_url = os.environ.get("NEOCLOUD_API_URL")
    env_key = (os.environ.get("NEOCLOUD_API_KEY") or "").strip()  # a pasted newline is no key
    if saved is None and named:
        known = ", ".join(sorted(load_profiles())) or "none"
        raise ProfileError(
            f"no profile {name!r} in {config_path()} (saved: {known}); create it with "
            f"`neocloud -p {name} login --url URL --key-file FILE`"
        )
    url = env_url or (saved.url if saved else None) or DEFAULT_URL
    key = env_key or (saved.api_key if saved else None)
    if not key:
        raise ProfileError(
            "not logged in: run `neocloud login --url URL --key-file FILE` (`neocloud up` "
            "prints both), or set NEOCLOUD_API_URL and NEOCLOUD_API_KEY"
        )
    return Profile(name, url, key, from_env=bool(env_key))


def client_for(explicit: str | None) -> Client:
    profile = resolve(explicit)
    return Client(profile.url, profile.api_key)
