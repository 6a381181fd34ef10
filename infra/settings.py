"""All configuration, from `AGENTLEDGER_*` environment variables (one class, nothing else
reads the environment). Secrets are `SecretStr`: never printed, never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentledger.domain.monitoring.rules import AlertRule
from agentledger.domain.subjects import tasks_stream

__all__ = ["Settings"]

DEFAULT_CATALOG = str(Path(__file__).resolve().parent.parent / "catalog" / "example.toml")


class Settings(BaseSettings):
    """agentledger settings; every field is `AGENTLEDGER_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="AGENTLEDGER_", extra="ignore")

    # -- broker --------------------------------------------------------------
    nats_url: str | None = Field(
        default=None, description="NATS server URL; unset: start the embedded nats-server."
    )
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_nkey_seed_file: Path | None = None
    nats_creds_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    nats_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Give up the first connection after this long."
    )
    subject_prefix: str = Field(default="ledger", pattern=r"^[A-Za-z0-9_\-]+$")
    duplicate_window_s: float = Field(default=3600.0, gt=0)
    stream_replicas: int = Field(default=1, ge=1)
    stream_max_age_s: float = Field(
        default=600.0,
        gt=0,
        description="How long streamed chunks are kept for late or reconnecting"
        " subscribers (the <PREFIX>_STREAMS stream).",
    )
    alert_rules: list[AlertRule] = Field(
        default_factory=list,
        description="Alert rules as JSON (a list of {name, agent, metric, window, above,"
        " clear_below, min_samples}), checked by `agentledger project` with the"
        " catalog's [alerts.*].",
    )
    alert_interval_s: float = Field(
        default=1.0, gt=0, description="How often the alert rules are checked."
    )
    eval_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Cases of an evaluation in flight at once (unless the dataset or the"
        " task says).",
    )
    eval_case_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long an evaluation waits for one case's outcome before it"
        " retries the evaluation later (finished cases are kept).",
    )
    stream_stall_s: float = Field(
        default=5.0,
        gt=0,
        description="The longest a streamed run waits for a subscriber's acks"
        " (slow_down) before taking it as gone.",
    )

    # -- storage -------------------------------------------------------------
    postgres_dsn: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; unset: SQLite."
    )
    postgres_pool_size: int = Field(default=8, ge=1)
    postgres_db_functions: bool = Field(
        default=True, description="eventsourcing's stored-function inserts (about 2x saves/s)."
    )
    postgres_connect_timeout_s: float = Field(
        default=2.0,
        ge=2,  # libpq's minimum
        description="Give up connecting to PostgreSQL after this long (one clear error).",
    )
    data_dir: Path = Field(
        default=Path(".agentledger"),
        description="Embedded storage; a relative path is resolved once, against the"
        " working directory at start.",
    )
    sqlite_path: Path | None = Field(default=None, description="Default: <data_dir>/ledger.db")
    cipher_key: SecretStr | None = Field(
        default=None, description="Base64 AES key: encrypts event payloads at rest."
    )

    # -- worker --------------------------------------------------------------
    worker_concurrency: int = Field(default=256, ge=1, description="Runs in flight per process.")
    store_threads: int = Field(default=8, ge=1, description="Threads for event-store calls.")
    store_retry_s: float = Field(
        default=20.0, ge=0, description="How long a save is retried while the database is down."
    )
    ack_wait_s: float = Field(default=30.0, gt=0)
    max_deliveries: int = Field(default=50, ge=1)
    run_leases: bool = Field(
        default=True,
        description="Workers take a lease on a run (NATS KV <PREFIX>_LEASES) before driving"
        " it, so a redelivered task never has two drivers.",
    )
    lease_ttl_s: float | None = Field(
        default=None,
        gt=0,
        description="How long a run lease outlives its last renewal (unset: the AckWait);"
        " fixed when the lease bucket is created.",
    )
    gc_threshold: int = Field(
        default=20_000,
        ge=0,
        description="Long-running processes (worker, projector) freeze the objects left"
        " after start-up out of the garbage collector and collect young objects every this"
        " many allocations (Python's default 700); 0 keeps Python's defaults.",
    )
    max_prompt_chars: int = Field(default=32_768, ge=1)
    catalog: str = DEFAULT_CATALOG
    app_dir: Path | None = Field(
        default=None,
        description="Folder put first on sys.path to import catalog references; default:"
        " the catalog file's folder, then the working directory.",
    )
    model_api_key: SecretStr | None = Field(
        default=None, description="API key for catalog models served at a base_url."
    )
    shutdown_grace_s: float = Field(default=20.0, ge=0)

    # -- projections ---------------------------------------------------------
    projection_poll_s: float = Field(default=0.01, gt=0)
    projection_batch: int = Field(default=500, ge=1)

    # -- memory and routing -------------------------------------------------
    embedder: str = Field(
        default="minilm",
        description="Embedding model of memory and routing: minilm (all-MiniLM-L6-v2 int8"
        " ONNX, the default), wordllama[:<dim>] (static embeddings, fastest), minilm-torch"
        " (the same MiniLM in PyTorch CPU, the `torch` extra), or openai:<model> (an"
        " OpenAI-compatible /embeddings endpoint at AGENTLEDGER_EMBEDDINGS_URL).",
    )
    memory_embedder: str | None = Field(
        default=None,
        description="Embedding model of the memory view and recall only (same specs as"
        " AGENTLEDGER_EMBEDDER; unset: AGENTLEDGER_EMBEDDER). wordllama folds thousands of"
        " runs a second where minilm folds 130-180 on two cores.",
    )
    embeddings_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible embeddings API (.../v1)."
    )
    embeddings_api_key: SecretStr | None = None
    embed_batch: int = Field(default=64, ge=1, le=4096, description="Texts per embed call.")
    memory_enabled: bool = Field(
        default=True, description="Fold the memory view (embeds every prompt and output)."
    )
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    hnsw_ef_search: int = Field(
        default=100, ge=1, le=1000, description="pgvector hnsw.ef_search of memory searches."
    )

    # -- retention -----------------------------------------------------------
    retention_days: float | None = Field(
        default=None,
        ge=0,
        description="`agentledger archive` without --older-than-days archives finished runs"
        " older than this.",
    )
    archive_dir: Path | None = Field(default=None, description="Default: <data_dir>/archive")

    # -- operations ----------------------------------------------------------
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /healthz, /readyz and /metrics on this port (worker and projector"
        " processes); unset: no HTTP server. 0: any free port (logged).",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Interface of the operations endpoints."
    )

    # -- dashboard -----------------------------------------------------------
    dashboard_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`agentledger project` also serves the web dashboard on this port"
        " (unset: no dashboard; `agentledger dashboard` defaults to 8765). 0: any free"
        " port (logged).",
    )
    dashboard_host: str = Field(
        default="127.0.0.1",
        description="Interface of the dashboard; any other than a loopback address needs"
        " AGENTLEDGER_DASHBOARD_TOKEN.",
    )
    dashboard_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the dashboard requires (at least 16 characters); required"
        " when it listens on a non-loopback address.",
    )

    # -- logging -------------------------------------------------------------
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    # -- tracing -------------------------------------------------------------
    otel_enabled: bool = Field(
        default=False,
        description="OpenTelemetry traces of the worker (the `otel` extra); the exporter"
        " reads the standard OTEL_EXPORTER_OTLP_* variables.",
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _resolve_data_dir(cls, value: Path) -> Path:
        # Resolved once, so every part of a process (and its log lines) names one folder.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("set both AGENTLEDGER_NATS_TLS_CERT and AGENTLEDGER_NATS_TLS_KEY")
        return self

    @property
    def backend(self) -> Literal["postgres", "sqlite"]:
        return "postgres" if self.postgres_dsn is not None else "sqlite"

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or self.data_dir / "ledger.db"

    @property
    def views_sqlite_file(self) -> Path:
        """SQLite views live in their own file so projecting never blocks event writes."""
        store = self.sqlite_file
        return store.with_name(store.stem + "-views" + store.suffix)

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def tasks_stream(self) -> str:
        return tasks_stream(self.subject_prefix)

    @property
    def events_stream(self) -> str:
        return f"{self.subject_prefix.upper()}_EVENTS"

    def safe_postgres_target(self) -> str:
        """host:port/db of the DSN, without credentials (for logs and errors)."""
        if self.postgres_dsn is None:
            return str(self.sqlite_file)
        parts = urlsplit(self.postgres_dsn.get_secret_value())
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"
