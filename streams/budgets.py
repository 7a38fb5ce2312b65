"""Budgets: spend limits per tenant and calendar period (UTC), with alert thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenops.errors import ConfigError

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")


class Budget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tenant: str
    period: Period
    limit_usd: Decimal = Field(gt=0)
    thresholds: tuple[Decimal, ...] = (Decimal("1.0"),)
    hard: bool = False
    """Refuse new calls at the relay once the limit is reached (until the period ends)."""


class _BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budgets: list[Budget] = []


def load_budgets(path: Path) -> list[Budget]:
    if not path.exists():
        return []
    try:
        return _BudgetsFile.model_validate(yaml.safe_load(path.read_text()) or {}).budgets
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid budgets file {path}: {exc}") from exc


def period_start(at: datetime, period: Period) -> datetime:
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(start: datetime, period: Period) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    month = start.month % 12 + 1
    return start.replace(year=start.year + (start.month == 12), month=month)
