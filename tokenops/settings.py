"""Process settings, read once from the environment (prefix `TOKENOPS_`).

Unset `TOKENOPS_KAFKA_BOOTSTRAP` means "the embedded broker on 127.0.0.1"; setting it to another
cluster makes every component use that cluster and nothing embedded starts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.price_book import load_price_book
from ingest.pricing import Pricer
from tokenops.errors import ConfigError

DEMO_CONFIG_DIR = Path(__file__).parent / "demo_config"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENOPS_", frozen=True)

    kafka_bootstrap: str | None = None
    embedded_broker_port: int = Field(9092, gt=0, lt=65536)

    config_dir: Path = DEMO_CONFIG_DIR
    data_dir: Path = Path(".tokenops")

    relay_host: str = "127.0.0.1"
    relay_port: int = Field(8080, gt=0, lt=65536)
    relay_workers: int = Field(1, ge=1, le=64)
    """Relay processes sharing the port, each with its own publisher, spool slot and budget
    gate (a relay is single-threaded Python: one worker per core uses them all)."""
    streams_workers: int = Field(1, ge=1, le=64)
    """Streams worker processes `tokenops up` starts, in one consumer group: the usage topic's
    partitions are split among them (a worker is single-threaded Python: one per core, at most
    one per partition)."""
    ledger_mark_retention_s: float = Field(6 * 3600.0, gt=0)
    """How long the budget ledger remembers a counted event to refuse it again, from the last
    time it was seen (memory: about 460 bytes per event in the window)."""
    warehouse_host: str = "127.0.0.1"
    warehouse_port: int = Field(8081, gt=0, lt=65536)
    simulator_host: str = "127.0.0.1"
    simulator_port: int = Field(8090, gt=0, lt=65536)

    simulate: Literal["auto", "always", "never"] = "auto"
    """auto: a provider without its API key in the environment is served by the simulator."""

    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    upstream_timeout_s: float = Field(120.0, gt=0)
    request_deadline_s: float = Field(300.0, gt=0)
    """A call's whole budget across fallback attempts."""
    reservation_output_tokens: int = Field(4096, gt=0)
    """Output tokens a hard budget reserves for a call that does not set max_tokens."""
    reservation_confirm_s: float = Field(60.0, gt=0)
    """How long after its deadline a call's hold waits for the ledger to count its event."""
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(10.0, gt=0)

    alert_delivery_attempts: int = Field(6, ge=1, le=100)
    """Webhook attempts per alert (across restarts) before it is recorded as failed."""
    alert_delivery_backoff_s: float = Field(1.0, gt=0)
    """Wait after a first failed attempt; doubles per attempt, with jitter."""
    alert_delivery_max_backoff_s: float = Field(60.0, gt=0)
    """Cap on any wait between attempts, a webhook's Retry-After included."""
    alert_delivery_timeout_s: float = Field(10.0, gt=0)
    """Per attempt, from connecting to the end of the response."""
    alert_max_age_s: float = Field(3600.0, gt=0)
    """An alert older than this when its delivery to a webhook would begin is recorded as
    `expired` instead of posted."""

    snapshot_interval_s: float = Field(3600.0, ge=0)
    """How often the warehouse writes Parquet snapshots for outside readers (0: only on request)."""
    snapshot_keep: int = Field(24, ge=1)
    """Snapshots kept; older ones are deleted."""

    session_secret: SecretStr | None = None
    """Signs dashboard session cookies; unset: a random one kept in DATA_DIR/session.key."""
    api_token: SecretStr | None = None
    """The query-API token the CLI sends (`Authorization: Bearer`), from access.yaml."""

    @field_validator("session_secret", "api_token")
    @classmethod
    def _unset_when_empty(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("use at least 32 random characters (e.g. `openssl rand -hex 32`)")
        return value

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_broker_port}"

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def simulator_url(self) -> str:
        return f"http://{self.simulator_host}:{self.simulator_port}"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def webhooks_path(self) -> Path:
        return self.config_dir / "webhooks.yaml"

    @property
    def price_book_path(self) -> Path:
        return self.config_dir / "price_book.yaml"

    @property
    def price_additions_path(self) -> Path:
        """Append-only log of price versions added with `tokenops prices add`."""
        return self.data_dir / "price_additions.jsonl"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKENOPS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid setting: {problems}") from None


def load_pricer(settings: Settings) -> Pricer:
    return Pricer(load_price_book(settings.price_book_path, settings.price_additions_path))
