"""Run the API with the studio's deterministic engines in a process of its own (no torch).

``python tests/studio/gateway_server.py PORT``; the database, Redis and limits come from the
``NEOCLOUD_*`` environment like ``neocloud up``'s. Tests start several to share one limiter.
"""

from __future__ import annotations

import sys

import uvicorn

from neocloud.studio import runtime
from neocloud.studio.engines.fake import fake_catalog


def main(port: int) -> None:
    from neocloud.api.app import create_app
    from neocloud.db.engine import Database
    from neocloud.kernel.settings import load_settings

    runtime.builtin_catalog = fake_catalog  # the echo and hash engines instead of torch models
    settings = load_settings()
    db = Database.from_url(settings.resolved_database_url())
    app = create_app(settings=settings, db=db)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
