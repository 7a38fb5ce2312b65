"""Revenue per tenant, for gross margins: the revenue file and its lines in the warehouse.

The file (CONFIG_DIR/revenue.yaml) has monthly plan fees and other revenue lines. In the
warehouse every line lies inside one calendar month: a plan becomes one line per month, and a
line whose period spans months is spread over them by day. Each piece but the last is rounded
half-even to 18 decimal places and the last takes the remainder, so the pieces add up to the
amount exactly. At every start the warehouse replaces all the file's lines (source 'config') in
one transaction: the table then says what the file says, and a failed sync leaves the old lines.
"""

from __future__ import annotations

import calendar
import decimal
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ingest.usage_event import Money
from tokenops.errors import ConfigError
from warehouse.store import WarehouseStore

Kind = Literal["plan_fee", "usage", "one_off", "credit"]
MAX_PLAN_MONTHS = 1200


def _month(value: Any) -> Any:
    """'2026-11' -> date(2026, 11, 1); anything else is left to the date validator."""
    if isinstance(value, str) and len(value) == 7:
        try:
            return datetime.strptime(value, "%Y-%m").date()
        except ValueError:
            raise ValueError(f"{value!r} is not a month (YYYY-MM)") from None
    if isinstance(value, date) and value.day != 1:
        raise ValueError(f"{value} is not a month: write it as YYYY-MM")
    return value


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError('write amounts as quoted decimal strings, e.g. "400.00"')
    return value


def _atto_scale(value: Decimal) -> Decimal:
    """Amounts fit the warehouse's DECIMAL(38, 18) exactly, or are refused."""
    if not value.is_finite() or abs(value) >= 10**20:
        raise ValueError("amounts must be finite and below 10^20 USD")
    exponent = value.normalize(_WIDE).as_tuple().exponent
    if isinstance(exponent, int) and exponent < -18:
        raise ValueError("amounts have at most 18 decimal places")
    return value


_WIDE = decimal.Context(prec=60)
Month = Annotated[date, BeforeValidator(_month)]
Amount = Annotated[Money, BeforeValidator(_no_float), AfterValidator(_atto_scale)]


class Plan(BaseModel):
    """A monthly plan fee, charged for every month from `from` to `to` (both included)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    tenant: str = Field(min_length=1, max_length=128)
    monthly_fee_usd: Amount = Field(ge=0)
    first_month: Month = Field(alias="from")
    last_month: Month = Field(alias="to")
    description: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Plan:
        if self.last_month < self.first_month:
            raise ValueError("`to` is before `from`")
        if len(months_between(self.first_month, self.last_month)) > MAX_PLAN_MONTHS:
            raise ValueError(f"a plan spans at most {MAX_PLAN_MONTHS} months")
        return self


class Line(BaseModel):
    """Revenue over [period_start, period_end] (dates, both included): billed usage, a one-off
    fee, or a credit (a negative amount)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=128)
    kind: Kind
    amount_usd: Amount
    period_start: date
    period_end: date
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Line:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        if (self.kind == "credit") != (self.amount_usd < 0):
            raise ValueError("a credit has a negative amount and only a credit has one")
        return self


class RevenueFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    plans: list[Plan] = []
    lines: list[Line] = []


def months_between(first: date, last: date) -> list[date]:
    """The first days of the months from `first`'s to `last`'s, both included."""
    count = (last.year - first.year) * 12 + last.month - first.month + 1
    return [
        date(first.year + (first.month - 1 + i) // 12, (first.month - 1 + i) % 12 + 1, 1)
        for i in range(max(count, 0))
    ]


def _month_end(first_day: date) -> date:
    return first_day.replace(day=calendar.monthrange(first_day.year, first_day.month)[1])


def _atto_half_even(value: Fraction) -> Decimal:
    return Decimal(f"{round(value * 10**18)}e-18")


def split_by_month(amount: Decimal, first: date, last: date) -> list[tuple[date, date, Decimal]]:
    """(start, end, amount) per calendar month of [first, last], the amount spread by day."""
    days = (last - first).days + 1
    pieces: list[tuple[date, date, Decimal]] = []
    given = Decimal(0)
    months = months_between(first, last)
    for index, month in enumerate(months):
        start, end = max(first, month), min(last, _month_end(month))
        if index == len(months) - 1:
            share = amount - given
        else:
            share = _atto_half_even(Fraction(amount) * ((end - start).days + 1) / days)
            given += share
        pieces.append((start, end, share))
    return pieces


def revenue_rows(revenue: RevenueFile) -> list[dict[str, Any]]:
    """The file as warehouse rows (each inside one month); overlapping plans are refused."""
    rows: list[dict[str, Any]] = []
    charged: set[tuple[str, date]] = set()
    for plan in revenue.plans:
        for month in months_between(plan.first_month, plan.last_month):
            if (plan.tenant, month) in charged:
                raise ValueError(f"{plan.tenant} has two plans in {month:%Y-%m}")
            charged.add((plan.tenant, month))
            rows.append(
                {
                    "line_id": f"plan:{plan.tenant}:{month:%Y-%m}",
                    "tenant": plan.tenant,
                    "kind": "plan_fee",
                    "amount_usd": plan.monthly_fee_usd,
                    "period_start": month,
                    "period_end": _month_end(month),
                    "description": plan.description,
                }
            )
    for number, line in enumerate(revenue.lines, start=1):
        for start, end, amount in split_by_month(
            line.amount_usd, line.period_start, line.period_end
        ):
            rows.append(
                {
                    "line_id": f"line:{number}:{start:%Y-%m}",
                    "tenant": line.tenant,
                    "kind": line.kind,
                    "amount_usd": amount,
                    "period_start": start,
                    "period_end": end,
                    "description": line.description,
                }
            )
    return rows


def load_revenue(path: Path) -> list[dict[str, Any]]:
    """The revenue file's warehouse rows; no file means no revenue (margins are then -cost)."""
    if not path.exists():
        return []
    try:
        return revenue_rows(RevenueFile.model_validate(yaml.safe_load(path.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid revenue file {path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    return str(exc)


def sync_revenue(store: WarehouseStore, rows: list[dict[str, Any]]) -> None:
    """Replace the file's lines in the warehouse, in one transaction (idempotent).

    Runs at service start, before the loader: nothing else writes the revenue table.
    """
    now = datetime.now(UTC)
    frame = pd.DataFrame.from_records(
        [
            {
                **row,
                "amount_usd": format(row["amount_usd"], "f"),
                "source": "config",
                "loaded_at": now,
            }
            for row in rows
        ]
    )
    with store.cursor() as cur:
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute("DELETE FROM revenue WHERE source = 'config'")
            if rows:
                cur.register("revenue_frame", frame)
                cur.execute("INSERT INTO revenue BY NAME SELECT * FROM revenue_frame")
                cur.unregister("revenue_frame")
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
