"""neocloud's gateway for the benchmark: the real app (API-key auth, rate limits, metering into
billing on SQLite) with one upstream model, ``bench/fake``, on the fake OpenAI-compatible server.

``python bench/studio/serve_neocloud.py --port P --upstream http://127.0.0.1:U/v1 --data DIR``
writes the operator's API key to ``DIR/admin-key`` before it serves. Rate limits are on at
limits the load never reaches (the buckets are still checked and taken from on every request);
``--redis URL`` uses the shared Redis limiter instead of the in-process one.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import uvicorn

from neocloud.api.app import create_app
from neocloud.cli.main import settle_heap
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
from neocloud.studio import runtime
from neocloud.studio.catalog import Catalog, CatalogModel, ModelKind
from neocloud.studio.engines.upstream import UpstreamPool
from neocloud.tenancy.service import bootstrap_operator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--redis", default=None)
    parser.add_argument(
        "--legacy-tail",
        action="store_true",
        help="as before the tail was fixed: usage flushed by a thread of this process, no "
        "settled heap (for before/after runs)",
    )
    args = parser.parse_args()

    args.data.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=args.data,
        redis_url=args.redis,
        studio_requests_per_minute=100_000_000,
        studio_tokens_per_minute=1_000_000_000,
        studio_redis_prefix="neocloud-bench:",
        studio_usage_writer="thread" if args.legacy_tail else "process",
    )
    db = Database.from_url(settings.resolved_database_url())
    upgrade(db)
    clock = SystemClock()
    key = bootstrap_operator(db=db, clock=clock)
    if key is not None:
        (args.data / "admin-key").write_text(key)
    runtime.builtin_catalog = Catalog  # no torch models: only the upstream is measured
    app = create_app(settings=settings, db=db, clock=clock)
    studio: runtime.StudioRuntime = app.state.studio
    studio.catalog.add_upstream(UpstreamPool("fake-vllm", [args.upstream]))
    studio.catalog.add(
        CatalogModel(
            "bench/fake",
            "fake-vllm",
            ModelKind.TEXT,
            8192,
            Decimal("0.1"),
            Decimal("0.2"),
            upstream_model="fake",
        )
    )
    if not args.legacy_tail:
        settle_heap()  # as `neocloud serve` does
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
