"""The alert delivery record: one webhook attempt for one alert, published on the deliveries topic.

Every attempt is a record, so an alert's history at a webhook reads as attempts 1..n ending in
`delivered` or `failed`. The delivery service rebuilds "what already finished" from this topic
when it starts, and the warehouse stores it in `alert_deliveries`. It never holds the webhook's
URL or secret: a Slack webhook URL is itself a credential.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

DeliveryStatus = Literal["delivered", "retrying", "failed", "expired"]
"""delivered: 2xx. retrying: a transient failure, another attempt follows. failed: final (a 4xx
other than 429, or the last allowed attempt failed). expired: final, not posted, because the
alert was older than the delivery service's maximum age when its turn came (a webhook added
later, or a service that was down for long, does not page anyone with stale alerts)."""

FINAL_STATUSES: frozenset[str] = frozenset({"delivered", "failed", "expired"})


class AlertDelivery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    delivery_id: str
    """Deterministic per (alert_id, webhook, attempt): a redelivered record is the same record."""
    alert_id: str
    webhook: str
    """The webhook's name in webhooks.yaml."""
    tenant: str
    attempt: int = Field(ge=1)
    status: DeliveryStatus
    http_status: int | None = None
    """None when no response arrived (connection error, timeout)."""
    error: str | None = None
    delivered_at: AwareDatetime
    """When this attempt ended (whatever its outcome)."""
    latency_ms: int = Field(ge=0)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_wire(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def delivery_id(alert_id: str, webhook: str, attempt: int) -> str:
    return hashlib.sha256(f"{alert_id}|{webhook}|{attempt}".encode()).hexdigest()[:32]
