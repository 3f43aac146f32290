"""A spool of usage records not yet in the database, so that a gateway process killed between
answering a request and its next flush (SIGKILL, OOM) loses no billable usage.

Each record is appended as one JSON line to this process's current segment file before the
request's answer completes (a ``write`` to the page cache: it survives the process, not a power
loss). A flush seals the current segment and opens a new one; once everything pending has
reached the database the sealed segments are deleted. A process starting on the same directory
takes over the segments of processes that are gone and has them flushed again: billing's writes
are idempotent on the request id, so a record that did reach the database before the kill is not
counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import IO

from neocloud.studio.metering import UsageRecord

log = logging.getLogger("neocloud.studio.spool")
SUFFIX = ".jsonl"
_LIVE: set[str] = set()  # prefixes of the spools open in this process (tests run several apps)


def _encode(r: UsageRecord) -> str:
    return json.dumps(
        {
            "request_id": r.request_id,
            "org_id": r.org_id,
            "key_id": r.key_id,
            "model": r.model,
            "endpoint": r.endpoint,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "aborted": r.aborted,
            "created_at": r.created_at.isoformat(),
        },
        separators=(",", ":"),
    )


def _decode(line: str) -> UsageRecord:
    d = json.loads(line)
    return UsageRecord(
        request_id=str(d["request_id"]),
        org_id=str(d["org_id"]),
        key_id=str(d["key_id"]),
        model=str(d["model"]),
        endpoint=str(d["endpoint"]),
        prompt_tokens=int(d["prompt_tokens"]),
        completion_tokens=int(d["completion_tokens"]),
        aborted=bool(d["aborted"]),
        created_at=datetime.fromisoformat(d["created_at"]),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class UsageSpool:
    """This process's segments under ``directory`` (``<pid>-<token>-<seq>.jsonl``). Not
    thread-safe: the usage buffer calls it under its own lock."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._prefix = f"{os.getpid()}-{secrets.token_hex(4)}-"
        _LIVE.add(self._prefix)
        self._seq = 0
        self._written = 0
        self._fh: IO[str] | None = None  # opened on the first record (an idle app opens none)
        self._current: Path | None = None

    def append(self, record: UsageRecord) -> None:
        """Put ``record`` where a process that outlives this one finds it."""
        if self._fh is None:
            self._seq += 1
            self._current = self.directory / f"{self._prefix}{self._seq:08d}{SUFFIX}"
            self._fh = self._current.open("a", encoding="utf-8")
            self._written = 0
        self._fh.write(_encode(record) + "\n")
        self._fh.flush()  # into the kernel now: a SIGKILL after this loses nothing
        self._written += 1

    def seal(self) -> Path | None:
        """Close the current segment (if it holds anything) and start a new one; returns the
        sealed segment, to delete once its records are in the database."""
        if self._fh is None or self._written == 0:
            return None
        sealed = self._current
        self._fh.close()
        self._fh = None
        return sealed

    def orphans(self) -> list[tuple[Path, list[UsageRecord]]]:
        """Segments left by processes that are gone, with their records (a line cut short by
        the kill is skipped: its request's answer had not completed)."""
        found: list[tuple[Path, list[UsageRecord]]] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if any(path.name.startswith(prefix) for prefix in _LIVE):
                continue
            pid_text = path.name.split("-", 1)[0]
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            # another live process's segment: it flushes it itself (our own pid with a prefix
            # not open here is a previous process's: a container's pid 1 comes back as pid 1)
            if pid != os.getpid() and _alive(pid):
                continue
            records: list[UsageRecord] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(_decode(line))
                except (ValueError, KeyError, TypeError):
                    log.warning("skipping a damaged usage spool line in %s", path.name)
            found.append((path, records))
        return found

    def close(self) -> None:
        """Close the current segment, removing it if empty (call once everything is flushed)."""
        _LIVE.discard(self._prefix)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self._written == 0 and self._current is not None:
                self._current.unlink(missing_ok=True)
