"""Options every command shares, set once by the root callback."""

from __future__ import annotations

from dataclasses import dataclass, field

from neocloud.cli.config import client_for
from neocloud.client import Client
from neocloud.kernel.clock import Clock, SystemClock


@dataclass
class CliState:
    profile: str | None = None
    _client: Client | None = None
    clock: Clock = field(default_factory=SystemClock)  # "now" for relative times (--since 7d)

    def client(self) -> Client:
        if self._client is None:
            self._client = client_for(self.profile)
        return self._client


STATE = CliState()
