"""The alert event: what streams publish on the alerts topic and the warehouse stores."""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from ingest.usage_event import Money

AlertState = Literal["WARN", "BREACH", "RECOVERED"]


class AlertEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    alert_id: str
    """Deterministic per (scope, period, threshold): a redelivered alert is the same alert."""
    kind: Literal["budget", "anomaly", "unpriced"]
    tenant: str
    scope: dict[str, Any]
    state: AlertState
    period: str
    period_start: AwareDatetime
    threshold: Money | None = None
    limit_usd: Money | None = None
    spend_usd: Money | None = None
    created_at: AwareDatetime
    trigger_event_id: str | None = None
    message: str
    budget_id: str | None = None
    """The budget whose threshold this alert is about (budget alerts only)."""
    explanation: dict[str, Any] | None = None
    """Anomaly alerts: what changed, with the change in cost split into its causes."""

    def to_wire(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def alert_id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def budget_alert_id(tenant: str, period: str, period_start: datetime, threshold: Decimal) -> str:
    return alert_id("budget", tenant, period, period_start.isoformat(), threshold)
