"""Options every command shares, set once by the root callback, and the caller's org."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

from neocloud.cli.config import ProfileError, client_for
from neocloud.cli.output import err
from neocloud.client import Client
from neocloud.kernel.clock import Clock, SystemClock

ORG_HELP = "Organization: its id (org_…), slug or name (default: your key's org)"


@dataclass
class CliState:
    profile: str | None = None
    _client: Client | None = None
    clock: Clock = field(default_factory=SystemClock)  # "now" for relative times (--since 7d)

    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = client_for(self.profile)
            except ProfileError as exc:
                err.print(f"[red]error[/red] {exc.message}", highlight=False)
                raise typer.Exit(2) from None
        return self._client

    def me(self) -> dict[str, Any]:
        """``GET /api/v1/me``: this key's user, org and role."""
        return self.client().me()

    def org_id(self, org: str | None) -> str:
        """The org an ``--org`` value names: an id as is, else a unique slug or name among the
        orgs this key sees; ``None`` is the caller's own org."""
        if org is None:
            return str(self.me()["org_id"])
        if org.startswith("org_"):
            return org
        wanted = org.casefold()
        found = [
            o
            for o in self.client().iter("orgs")
            if o["slug"] == org or str(o["name"]).casefold() == wanted
        ]
        if len(found) == 1:
            return str(found[0]["id"])
        if found:
            ids = ", ".join(o["id"] for o in found)
            err.print(
                f"[red]error[/red] {org!r} names {len(found)} organizations ({ids}): use an id"
            )
        else:
            err.print(
                f"[red]error[/red] no organization {org!r} (an id, slug or name; "
                "`neocloud orgs list` shows them)",
                highlight=False,
            )
        raise typer.Exit(2)

    def maybe_org_id(self, org: str | None) -> str | None:
        """Like ``org_id`` but ``None`` stays ``None`` (the API's own default applies)."""
        return None if org is None else self.org_id(org)


STATE = CliState()
