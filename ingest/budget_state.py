"""Budget state: what the streams ledger knows about one (tenant, period), and what the relay's
hard gate reads. Published on the compacted budget-state topic, keyed `tenant|period`, so the
latest state per key is all a reader needs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from ingest.usage_event import Money


class BudgetState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    period: Literal["day", "month"]
    period_start: AwareDatetime
    spend_usd: Money
    limit_usd: Money
    hard: bool
    blocked: bool
    """A hard budget whose limit is reached: the relay refuses new calls until the period ends."""
    updated_at: AwareDatetime

    def key(self) -> bytes:
        return f"{self.tenant}|{self.period}".encode()

    def to_wire(self) -> bytes:
        return self.model_dump_json().encode()

    def in_force(self, period_start: datetime) -> bool:
        return self.period_start == period_start
