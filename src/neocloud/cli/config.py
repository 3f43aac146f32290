"""CLI profiles: where the API is and which key to use, in the user's config directory.

Resolution order: ``--profile`` (or ``NEOCLOUD_PROFILE``) picks a saved profile; the
environment variables ``NEOCLOUD_API_URL`` and ``NEOCLOUD_API_KEY`` override its fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_dir

from neocloud.client import Client
from neocloud.client.base import DEFAULT_URL


@dataclass
class Profile:
    name: str
    url: str
    api_key: str | None


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
    tmp.write_text(json.dumps(profiles, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def resolve(profile_name: str | None) -> Profile:
    name = profile_name or os.environ.get("NEOCLOUD_PROFILE") or "default"
    saved = load_profiles().get(name, {})
    url = os.environ.get("NEOCLOUD_API_URL") or saved.get("url") or DEFAULT_URL
    key = os.environ.get("NEOCLOUD_API_KEY") or saved.get("api_key") or None
    return Profile(name, url, key)


def client_for(profile_name: str | None) -> Client:
    profile = resolve(profile_name)
    return Client(profile.url, profile.api_key)
