"""Budget definitions: scopes, calendar periods in the budget's time zone, validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.usage_event import TokenCounts
from streams.budgets import Budget, BudgetBook, load_budgets
from tests.support import usage_event
from tokenops.errors import ConfigError


def window(**fields: object) -> tuple[datetime, datetime]:
    at = fields.pop("at")
    assert isinstance(at, datetime)
    return Budget.model_validate({"period": "day", "limit_usd": "1", **fields}).window(at)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_calendar_periods_in_utc() -> None:
    at = utc(2026, 11, 4, 15, 30)  # a Wednesday
    assert window(at=at) == (utc(2026, 11, 4), utc(2026, 11, 5))
    assert window(period="week", at=at) == (utc(2026, 11, 2), utc(2026, 11, 9))
    assert window(period="month", at=at) == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert window(period="month", at=utc(2026, 12, 31, 23))[1] == utc(2027, 1, 1)


def test_periods_follow_the_budget_time_zone_and_dst() -> None:
    # New York leaves DST on 2026-11-01: that local day has 25 hours.
    start, end = window(timezone="America/New_York", at=utc(2026, 11, 1, 12))
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    month = window(period="month", timezone="Asia/Shanghai", at=utc(2026, 10, 31, 17))
    assert month[0] == utc(2026, 10, 31, 16)  # already November in Shanghai


def test_custom_periods_count_from_their_anchor() -> None:
    fields = {"period": "custom", "period_days": 14, "anchor": "2026-01-05"}
    assert window(**fields, at=utc(2026, 1, 20)) == (utc(2026, 1, 19), utc(2026, 2, 2))
    assert window(**fields, at=utc(2025, 12, 30)) == (utc(2025, 12, 22), utc(2026, 1, 5))


def test_ids_are_stable_and_the_tenant_shorthand_is_a_scope() -> None:
    a = Budget.model_validate({"tenant": "acme", "period": "day", "limit_usd": "1"})
    b = Budget.model_validate({"scope": {"tenant": "acme"}, "period": "day", "limit_usd": "2"})
    assert a.id == b.id and a.id.startswith("b-")
    assert a.scope.tenant == "acme" and a.scope.label() == "tenant=acme"
    assert Budget.model_validate({"period": "day", "limit_usd": "1"}).scope.label() == (
        "organisation"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"period": "day"}, "needs limit_usd, limit_tokens or limit_requests"),
        ({"period": "day", "limit_usd": "-1"}, "greater than 0"),
        ({"period": "day", "limit_usd": "1", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"period": "custom", "limit_usd": "1"}, "period_days and anchor"),
        ({"period": "year", "limit_usd": "1"}, "period"),
        ({"period": "day", "limit_usd": "1", "thresholds": [0]}, "thresholds"),
        ({"period": "day", "limit_usd": "1", "scope": {"team": "x"}}, "team"),
    ],
)
def test_invalid_budgets_are_refused_with_the_reason(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Budget.model_validate(fields)


def test_a_budgets_file_with_an_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {tenant: acme, period: fortnight, limit_usd: '1'}\n")
    with pytest.raises(ConfigError, match=r"budgets\.yaml"):
        load_budgets(path)
    path.write_text(
        "budgets:\n  - {tenant: acme, period: day, limit_usd: '1'}\n"
        "  - {tenant: acme, period: day, limit_usd: '2'}\n"
    )
    with pytest.raises(ConfigError, match="same id"):
        load_budgets(path)
    assert load_budgets(tmp_path / "absent.yaml") == []


def test_the_book_answers_matching_from_the_budgets_in_force_after_each_change() -> None:
    event = usage_event(TokenCounts(input_uncached=10), tenant="acme", feature="search")
    other = usage_event(TokenCounts(input_uncached=10), tenant="acme", feature="chat")
    search = Budget.model_validate(
        {"scope": {"tenant": "acme", "feature": "search"}, "period": "day", "limit_usd": "1"}
    )
    book = BudgetBook([])
    assert book.matching(event) == []
    book.put(search)
    assert book.matching(event) == [search] and book.matching(other) == []
    raised = search.model_copy(update={"limit_usd": Decimal("2")})
    book.put(raised)
    assert book.matching(event) == [raised]
    book.delete(search.id)
    assert book.matching(event) == []
