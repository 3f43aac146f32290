"""Settings, read once from ``NEOCLOUD_*`` environment variables and passed down explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEOCLOUD_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("./.data"), description="Where SQLite, the admin key and logs live")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/neocloud.db"
    )
    # The connection budget (docs/reliability.md): each API or worker process opens one pool on
    # a PostgreSQL database (two for ``neocloud up`` with its worker), holding up to
    # ``db_pool_size`` connections and ``db_max_overflow`` more under a burst; each API
    # process's studio usage writer (a child process) at most ``studio_usage_writer_pool_size``.
    db_pool_size: int = Field(10, ge=1, le=1000)
    db_max_overflow: int = Field(5, ge=0, le=1000)
    # How long a thread waits for a free connection of a full pool before failing (seconds).
    db_pool_timeout_s: float = Field(30.0, gt=0, le=600)
    studio_usage_writer_pool_size: int = Field(2, ge=1, le=10)
    host: str = "127.0.0.1"
    port: int = Field(8420, ge=1, le=65535)
    log_level: str = "info"
    # API limits: every size and count is bounded.
    page_limit_default: int = Field(100, ge=1)
    page_limit_max: int = Field(1000, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)
    # A request running under an Idempotency-Key holds its key this long: a retry after that
    # (its process died) runs it again if nothing of it committed (a run still going then has
    # its write refused), and is told 409 ``idempotency_outcome_unknown`` if its effect did.
    idempotency_lease_s: float = Field(60.0, gt=0, le=3600)
    # Leader lease for the scheduler and reconcilers, renewed every worker cycle (1 s): a
    # SIGKILLed leader's standby takes over within this plus a cycle (docs/reliability.md).
    leader_lease_ttl_s: float = Field(5.0, gt=0, le=3600)
    # Don't write last_used_at on every request: once per this many seconds per key is enough.
    key_touch_interval_s: float = Field(60.0, ge=0)
    redis_url: str | None = None
    # The studio's default rate limits per API key (an operator may override them per key).
    studio_requests_per_minute: int = Field(600, ge=1)
    studio_tokens_per_minute: int = Field(1_000_000, ge=1)
    # Prefix of the studio's keys in Redis (several deployments may share one Redis).
    studio_redis_prefix: str = "neocloud:rl:"
    # How often each server reads the credentials version: a key revoked (or a member removed
    # or demoted) through another server stops working on this one's /v1 within about this long.
    studio_auth_poll_s: float = Field(0.25, gt=0, le=60)
    # Who writes metered usage into the database: a child process (``process``: the serving
    # process's event loop never waits on a flush for the GIL) or a thread of the server
    # (``thread``). Tests and in-memory databases use the thread whatever this says.
    studio_usage_writer: Literal["process", "thread"] = "process"
    # Studio files (/v1/files): the largest file, and what one org may keep in all, in bytes.
    # Content lives under ``<data_dir>/studio-files``, never in the database.
    studio_file_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=2**34)
    studio_org_files_max_bytes: int = Field(1024 * 1024 * 1024, ge=1024, le=2**40)
    # Batches (/v1/batches): run by a worker thread of each server process (``studio_batch_worker``;
    # several processes share the work through leases), ``studio_batch_concurrency`` requests at
    # a time, recorded every ``studio_batch_chunk``; they pause while online requests start at
    # ``studio_batch_yield_rps`` or more per second (0: never pause). The price is the price
    # book's batch rate (its ``batch_discount``, 50 % off by default).
    studio_batch_worker: bool = True
    studio_batch_concurrency: int = Field(4, ge=1, le=256)
    studio_batch_chunk: int = Field(16, ge=1, le=1000)
    studio_batch_yield_rps: float = Field(20.0, ge=0, le=1e6)
    studio_batch_lease_ttl_s: float = Field(60.0, gt=0, le=3600)
    # Where studio jobs (fine-tunes, batches) run (docs/studio-jobs.md, "Runners"): ``local``,
    # in the worker process with no fleet capacity (``make run``, tests), or ``fleet``: each job
    # first gets an instance of ``studio_job_instance_type`` in its org's name (on-demand for
    # fine-tunes, spot for batches by default; queued up to ``studio_job_max_wait_s``), counted
    # in utilization and quota but billed by its tokens only; a job waiting for one is looked
    # at again every ``studio_job_retry_s``; or ``node``: as ``fleet``, and a fine-tune (or a
    # batch of built-in models' requests) runs on that instance's node through its driver (ssh,
    # redfish+ssh), with ``studio_node_python`` there (its image must carry torch, transformers
    # and peft; for batches, neocloud's dependencies), staged under ``studio_node_workdir``
    # (base models and code kept per node, a job's files removed after it).
    studio_runner: Literal["local", "fleet", "node"] = "local"
    studio_node_python: str = Field("python3", min_length=1, max_length=1024)
    studio_node_workdir: str = Field(
        "/var/lib/neocloud/studio", min_length=2, max_length=1024, pattern=r"^/[A-Za-z0-9._/-]+$"
    )
    studio_job_instance_type: str = Field("1xH100", min_length=3, max_length=32)
    studio_finetune_class: Literal["on_demand", "spot"] = "on_demand"
    studio_batch_class: Literal["on_demand", "spot"] = "spot"
    studio_job_max_wait_s: int = Field(24 * 3600, ge=1, le=7 * 24 * 3600)
    studio_job_retry_s: float = Field(5.0, gt=0, le=3600)
    # Fine-tuning jobs tracked in MLflow (docs/studio-jobs.md, "Tracking"): the tracking server's
    # URI (unset: no tracking; needs the ``mlflow`` extra), the experiment of an org's jobs
    # (``<prefix><org id>``), and how long one request to the server may take before the job
    # goes on without tracking (retried a minute later).
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_prefix: str = Field("neocloud/", max_length=200)
    mlflow_timeout_s: int = Field(5, ge=1, le=120)
    # Billing: how each invoice line is rounded (a ``decimal`` rounding mode), and how long after
    # a month ends its invoices stay drafts (late facts still land on them) before finalizing.
    billing_rounding: str = Field(
        "ROUND_HALF_UP", pattern="^ROUND_(HALF_UP|HALF_EVEN|HALF_DOWN|UP|DOWN|CEILING|FLOOR)$"
    )
    billing_grace_days: int = Field(3, ge=0, le=31)
    # Compute: the notice spot work gets before it is preempted; whether a bought reservation
    # may be cancelled, and until how many hours before its start; whether new and repaired
    # nodes pass a burn-in health check before they take work.
    compute_preemption_notice_s: float = Field(30.0, ge=0, le=86_400)
    compute_reservations_cancellable: bool = True
    compute_reservation_cancel_cutoff_h: float = Field(0.0, ge=0, le=24 * 365)
    compute_burn_in: bool = True
    # Reservations sold first come, first served, or by bid price (``placement.admission``).
    compute_admission_policy: Literal["fcfs", "bid_price"] = "fcfs"
    # Managed databases (docs/databases.md): live databases an org may have, hours between
    # scheduled backups (0: none), seconds between health checks of a running server.
    databases_max_per_org: int = Field(10, ge=0, le=10_000)
    databases_backup_interval_h: float = Field(24.0, ge=0, le=24 * 366)
    databases_health_interval_s: float = Field(30.0, gt=0, le=86_400)
    # How often the compute worker cycles when nothing wakes it (the API's writes wake it at once,
    # across processes too: NOTIFY on PostgreSQL, a wake file beside a SQLite database).
    compute_worker_interval_s: float = Field(1.0, gt=0, le=3600)
    # The simulated driver (``neocloud up``, ``neocloud sim``): seconds per step and the
    # probability that a step fails, deterministic under the seed.
    sim_provision_s: float = Field(0.0, ge=0, le=86_400)
    sim_deprovision_s: float = Field(0.0, ge=0, le=86_400)
    sim_wipe_s: float = Field(0.0, ge=0, le=86_400)
    sim_power_s: float = Field(0.0, ge=0, le=86_400)
    sim_failure_probability: float = Field(0.0, ge=0, le=1)
    sim_seed: int = 0

    # --- s-limits: the platform API's rate limits, outbound timeouts, TLS to upstreams and the
    # shutdown grace. Per API key on /api/v1 (anonymous calls: per client address): requests a
    # minute, of which writes (POST, PUT, PATCH, DELETE) a minute; each bucket holds a minute's
    # allowance, so a burst of that size is served at once. Shared through Redis under this
    # prefix when ``redis_url`` is set.
    api_requests_per_minute: int = Field(600, ge=1, le=1_000_000)
    api_writes_per_minute: int = Field(240, ge=1, le=1_000_000)
    api_redis_prefix: str = "neocloud:api-rl:"
    # Each Redis command (rate limits) gives up after this long; the limiter then limits per
    # process until Redis answers again.
    redis_timeout_s: float = Field(0.25, gt=0, le=30)
    # The studio's calls to upstream servers (vLLM, SGLang): to open a connection, to wait
    # between two reads of an answer (a non-streamed generation sends nothing until it is
    # done), for a whole exchange, and for one health probe. Past them a request answers 504.
    studio_upstream_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    studio_upstream_read_timeout_s: float = Field(600.0, gt=0, le=3600)
    studio_upstream_total_timeout_s: float = Field(1800.0, gt=0, le=86_400)
    studio_upstream_probe_timeout_s: float = Field(2.0, gt=0, le=60)
    # PEM file of the CAs that sign https:// upstreams' certificates (a private CA); unset: the
    # system's trusted CAs. Certificates and host names are always verified.
    studio_upstream_ca_bundle: Path | None = None
    # ``neocloud up`` on SIGTERM: stop accepting, let requests in flight finish for at most
    # this many seconds, then stop the background work.
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600)
    # Seals node credentials at rest (a Fernet key); unset: a key file under data_dir, made
    # with mode 0600 on first start.
    secret_key: str | None = Field(None, repr=False)
    # --- end of s-limits

    # The node agent (docs/agent.md): how often agents heartbeat (told in every answer), how
    # long a node that has heartbeated may stay silent before it is failed, the telemetry
    # series' bucket and how long it is kept; whether /metrics answers without an operator key.
    agent_interval_s: float = Field(10.0, ge=1, le=3600)
    agent_silence_s: float = Field(60.0, ge=5, le=86_400)
    agent_series_step_s: int = Field(60, ge=10, le=3600)
    agent_retention_h: float = Field(24.0, gt=0, le=24 * 90)
    metrics_public: bool = False
    # Installing the agent at burn-in (docs/agent-node.md): ``off`` (the operator runs agents
    # themselves, burn-in waits for none), ``wheel`` (the wheel ``agent_wheel`` is copied to the
    # node and pip-installed into /opt/neocloud-agent) or ``pythonpath`` (the node already sees
    # neocloud's source at ``agent_pythonpath``: test hosts, a shared filesystem); the node's
    # interpreter; the URL agents report to (default http://<host>:<port> of ``neocloud up``);
    # how long burn-in waits for a new agent's first heartbeat before the node fails it.
    agent_install: str = Field("off", pattern="^(off|wheel|pythonpath)$")
    agent_python: str = Field("python3", min_length=1, max_length=256)
    agent_pythonpath: str | None = Field(None, min_length=1, max_length=1024)
    agent_wheel: Path | None = None
    agent_report_timeout_s: float = Field(120.0, ge=5, le=3600)
    public_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=512)
    # Reimaging and booting bare-metal nodes (docs/nodes-redfish.md): how long a cloud-init seed
    # served to a BMC lives at most; how long a reimage may take before SSH answers again (else
    # the node fails with the reason).
    seed_ttl_s: float = Field(1800.0, ge=60, le=86_400)
    reimage_timeout_s: float = Field(1800.0, ge=10, le=86_400)

    def resolved_public_url(self) -> str:
        """The URL nodes (their agents) reach this control plane at: ``NEOCLOUD_PUBLIC_URL``,
        else ``http://<host>:<port>`` as ``neocloud up`` listens (set it when that is 0.0.0.0
        or behind a proxy)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'neocloud.db').resolve()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the one ``Settings`` object: environment first, explicit overrides on top (each
    validated as its field says; ``None`` leaves a field to the environment)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
