"""Budgets: limits on spend, tokens or requests for a scope over a calendar period.

A scope narrows from the whole organisation (no field set) to a tenant, a feature, a relay key,
optionally one model; an event counts towards every budget whose set fields all match it.
Periods are calendar periods in the budget's time zone (day, ISO week from Monday, month) or a
custom length in days counted from an anchor date; they reset at local midnight, so a Tokyo
budget resets at 15:00 UTC and a DST change gives a 23- or 25-hour day.

Budgets come from the budgets file and, at run time, from the compacted budgets topic (written by
the query API); a topic record replaces the file budget with the same id, a tombstone deletes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.usage_event import Money, UsageEvent
from tokenops.errors import ConfigError

Period = Literal["day", "week", "month", "custom"]
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))


class Attributed(Protocol):
    """What a scope is matched against: a usage event, or a call before it has one."""

    @property
    def tenant(self) -> str: ...
    @property
    def relay_key_id(self) -> str | None: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def requested_model(self) -> str: ...
    @property
    def served_model(self) -> str: ...


class BudgetScope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str | None = None
    feature: str | None = None
    relay_key: str | None = None
    """A relay key id (as in tenants.yaml), never the key itself."""
    model: str | None = None
    """Matches the model the caller asked for or the one that served the call."""

    def matches(self, event: Attributed) -> bool:
        return (
            (self.tenant is None or self.tenant == event.tenant)
            and (self.feature is None or self.feature == event.feature)
            and (self.relay_key is None or self.relay_key == event.relay_key_id)
            and (self.model is None or self.model in (event.requested_model, event.served_model))
        )

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items()]
        return ", ".join(parts) or "organisation"


class Budget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9._:-]*$")
    """Stable identity; derived from scope, period and time zone when not given."""
    scope: BudgetScope = BudgetScope()
    period: Period
    timezone: str = "UTC"
    period_days: int | None = Field(None, ge=1, le=366)
    """Custom periods only: the length in days."""
    anchor: date | None = None
    """Custom periods only: the local date the first period starts."""
    limit_usd: Money | None = Field(None, gt=0)
    limit_tokens: int | None = Field(None, gt=0)
    limit_requests: int | None = Field(None, gt=0)
    thresholds: tuple[Money, ...] = DEFAULT_THRESHOLDS
    hard: bool = False
    """Refuse calls at the relay that could take the scope past a limit this period."""

    @model_validator(mode="before")
    @classmethod
    def _tenant_shorthand(cls, data: Any) -> Any:
        """`{tenant: acme, ...}` is short for `{scope: {tenant: acme}, ...}`."""
        if isinstance(data, dict) and "tenant" in data and "scope" not in data:
            data = dict(data)
            data["scope"] = {"tenant": data.pop("tenant")}
        return data

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("thresholds")
    @classmethod
    def _sorted_fractions(cls, value: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        if not value or any(t <= 0 or t > 10 for t in value):
            raise ValueError("thresholds are fractions of the limit, each in (0, 10]")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _complete(self) -> Budget:
        if self.limit_usd is None and self.limit_tokens is None and self.limit_requests is None:
            raise ValueError("a budget needs limit_usd, limit_tokens or limit_requests")
        if (self.period == "custom") != (self.period_days is not None and self.anchor is not None):
            raise ValueError("period_days and anchor are required for, and only for, custom")
        if not self.id:
            object.__setattr__(self, "id", self.derived_id())
        return self

    def derived_id(self) -> str:
        identity = {
            "scope": self.scope.model_dump(exclude_none=True),
            "period": self.period,
            "timezone": self.timezone,
            "period_days": self.period_days,
            "anchor": str(self.anchor),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"b-{digest[:16]}"

    def window(self, at: datetime) -> tuple[datetime, datetime]:
        """The [start, end) of the period containing `at`, as UTC instants."""
        return _window(self.period, self.timezone, self.period_days, self.anchor, at)

    def limits(self) -> Iterator[tuple[str, Decimal]]:
        """(measure, limit) for each limit set: measure is usd, tokens or requests."""
        if self.limit_usd is not None:
            yield "usd", self.limit_usd
        if self.limit_tokens is not None:
            yield "tokens", Decimal(self.limit_tokens)
        if self.limit_requests is not None:
            yield "requests", Decimal(self.limit_requests)

    def to_wire(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def _window(
    period: Period, zone: str, days: int | None, anchor: date | None, at: datetime
) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    local = at.astimezone(tz).date()
    if period == "day":
        first, after = local, local + timedelta(days=1)
    elif period == "week":
        first = local - timedelta(days=local.weekday())
        after = first + timedelta(days=7)
    elif period == "month":
        first = local.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        assert days is not None and anchor is not None
        first = anchor + timedelta(days=((local - anchor).days // days) * days)
        after = first + timedelta(days=days)
    return _midnight(first, tz), _midnight(after, tz)


@lru_cache(maxsize=4096)
def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tz).astimezone(UTC)


class _BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budgets: list[Budget] = []


def load_budgets(path: Path) -> list[Budget]:
    if not path.exists():
        return []
    try:
        budgets = _BudgetsFile.model_validate(yaml.safe_load(path.read_text()) or {}).budgets
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid budgets file {path}: {exc}") from exc
    ids = [b.id for b in budgets]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"invalid budgets file {path}: two budgets have the same id")
    return budgets


_Index = dict[str | None, list[Budget]]
_Answers = dict[tuple[str, str | None, str | None, str, str], list[Budget]]


class BudgetBook:
    """The budgets in force: the file's, overlaid by run-time changes from the budgets topic.

    `matching` is on the hot path of the ledger and the relay gate: budgets are indexed by
    tenant (None for budgets across tenants), and the answer for each attribution (tenant,
    feature, relay key, requested and served model) is remembered until the budgets change.
    The index and those answers are replaced together, so a reader on another thread never
    keeps an answer from before a change.
    """

    def __init__(self, budgets: Iterable[Budget] = ()) -> None:
        self._budgets: dict[str, Budget] = {b.id: b for b in budgets}
        self._lookup: tuple[_Index, _Answers] = ({}, {})
        """The tenant index and the answers given from it, swapped as one."""
        self._reindex()

    def __iter__(self) -> Iterator[Budget]:
        return iter(self._budgets.values())

    def __len__(self) -> int:
        return len(self._budgets)

    def get(self, budget_id: str) -> Budget | None:
        return self._budgets.get(budget_id)

    def put(self, budget: Budget) -> None:
        self._budgets[budget.id] = budget
        self._reindex()

    def delete(self, budget_id: str) -> Budget | None:
        removed = self._budgets.pop(budget_id, None)
        self._reindex()
        return removed

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the budgets topic: a budget, or a tombstone (no value) for its key."""
        if value is None:
            if key is not None:
                self.delete(key.decode())
            return
        self.put(Budget.model_validate_json(value))

    def matching(self, event: UsageEvent) -> list[Budget]:
        index, answers = self._lookup
        key = (
            event.tenant,
            event.feature,
            event.relay_key_id,
            event.requested_model,
            event.served_model,
        )
        found = answers.get(key)
        if found is None:
            candidates = index.get(event.tenant, []) + index.get(None, [])
            found = [b for b in candidates if b.scope.matches(event)]
            if len(answers) >= 100_000:
                answers.clear()  # a bound on attributions remembered, not on correctness
            answers[key] = found
        return found

    def for_tenant(self, tenant: str) -> list[Budget]:
        index = self._lookup[0]
        return index.get(tenant, []) + index.get(None, [])

    def _reindex(self) -> None:
        index: _Index = {}
        for budget in self._budgets.values():
            index.setdefault(budget.scope.tenant, []).append(budget)
        self._lookup = (index, {})
