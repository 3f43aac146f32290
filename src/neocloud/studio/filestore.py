"""Where the studio keeps files' content: a port, and a local-directory backend.

The database holds each file's metadata (``studio_files``); its bytes live behind a
``FileStore`` under a key the service chooses (``<org_id>/<file_id>``). The local backend keeps
them under ``<data_dir>/studio-files``; an object store would be another backend of the same port.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from neocloud.kernel.errors import NotFound

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_.-]{1,128}){1,3}$")


class FileStore(Protocol):
    def put(self, key: str, content: bytes) -> None:
        """Store ``content`` under ``key``, replacing what was there, atomically."""

    def get(self, key: str) -> bytes:
        """The content under ``key``; ``NotFound`` when there is none."""

    def delete(self, key: str) -> None:
        """Remove ``key``'s content; nothing when there is none."""


class LocalFileStore:
    """Files under ``root``, one per key; a write goes to a temporary name, then is renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    def put(self, key: str, content: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with tmp.open("wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no stored content for {key}", code="file_content_missing") from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
