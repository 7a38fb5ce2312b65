"""The budget ledger's arithmetic, idempotence and alert lifecycle, on plain mappings (the worker
uses faust tables with the same keys)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ingest.usage_event import TokenCounts, UsageEvent
from streams.budget_ledger import BudgetLedger, partial_key
from streams.budgets import Budget, BudgetBook
from tests.support import usage_event

NOON = datetime(2026, 11, 3, 12, tzinfo=UTC)


def priced(cost: str, at: datetime = NOON, **fields: Any) -> UsageEvent:
    return usage_event(
        TokenCounts(input_uncached=100, output=10),
        event_time=at,
        price_status="priced",
        cost_usd=Decimal(cost),
        **fields,
    )


def budget(**fields: Any) -> Budget:
    values: dict[str, Any] = {
        "scope": {"tenant": "acme"},
        "period": "day",
        "limit_usd": "1.00",
        "thresholds": ["0.5", "1.0"],
    }
    values.update(fields)
    return Budget.model_validate(values)


class Ledger:
    """A ledger with its two tables, fed one batch per call from one partition."""

    def __init__(self, *budgets: Budget, partitions: int = 3, retention_s: int = 6 * 3600) -> None:
        self.book = BudgetBook(budgets)
        retention = timedelta(seconds=retention_s)
        self.ledger = BudgetLedger(self.book, partitions, mark_retention=retention)
        self.table: dict[str, str] = {}
        self.batches = 0

    def apply(self, *events: UsageEvent, partition: int = 0, now: datetime = NOON) -> list[str]:
        self.batches += 1
        step = self.ledger.apply(events, partition, self.table, str(self.batches), now)
        self.states = step.states
        self.alerts = step.alerts
        return [a.state for a in step.alerts]

    def total(self, b: Budget, at: datetime = NOON) -> Any:
        return self.ledger.total(b.id, b.window(at)[0], self.table)


def test_each_threshold_alerts_once_when_crossed() -> None:
    b = budget()
    ledger = Ledger(b)
    states = [ledger.apply(priced(c)) for c in ("0.30", "0.19", "0.01", "0.49", "0.02", "5")]
    assert states == [[], [], ["WARN"], [], ["BREACH"], []]
    assert ledger.total(b).spend_usd == Decimal("6.01")
    assert ledger.total(b).requests == 6 and ledger.total(b).tokens == 660


def test_a_redelivered_event_never_counts_twice_in_a_batch_or_later() -> None:
    b = budget()
    ledger = Ledger(b)
    event = priced("0.75")
    assert ledger.apply(event, event) == ["WARN"]
    assert ledger.apply(event) == []
    assert ledger.total(b).spend_usd == Decimal("0.75") and ledger.total(b).events == 1


def test_marks_last_one_window_from_the_last_sighting_then_leave_the_table() -> None:
    b = budget(limit_usd="100")
    ledger = Ledger(b, retention_s=3600)
    event = priced("0.75")
    minutes = [NOON + timedelta(minutes=m) for m in (0, 50, 100, 200)]
    ledger.apply(event, now=minutes[0])
    ledger.apply(event, now=minutes[1])  # a duplicate within the hour: skipped, seen again
    ledger.apply(event, now=minutes[2])  # the first record expired, the second holds it
    assert ledger.total(b).events == 1
    assert len([k for k in ledger.table if k.startswith("m|")]) == 2
    ledger.apply(event, now=minutes[3])  # over an hour since it was last seen: counts again
    assert ledger.total(b).events == 2
    assert len([k for k in ledger.table if k.startswith("m|")]) == 1


def test_a_restarted_ledger_expires_marks_by_when_they_were_counted() -> None:
    b = budget(limit_usd="100")
    first = Ledger(b, retention_s=3600)
    old, recent = priced("0.1"), priced("0.2")
    first.apply(old, now=NOON)
    first.apply(recent, now=NOON + timedelta(minutes=50))
    restarted = Ledger(b, retention_s=3600)
    restarted.table, restarted.batches = dict(first.table), first.batches
    restarted.apply(old, recent, now=NOON + timedelta(minutes=70))
    assert restarted.total(b).events == 3  # `old` came back after its hour, `recent` within


def test_marks_written_without_a_time_expire_one_window_after_the_restart() -> None:
    b = budget(limit_usd="100")
    first = Ledger(b, retention_s=3600)
    event = priced("0.1")
    first.apply(event, now=NOON)
    restarted = Ledger(b, retention_s=3600)
    restarted.table = {  # as an earlier version wrote it: key and record without the time
        ("m|0|1" if k.startswith("m|") else k): "\n".join(
            line for line in v.splitlines() if not line.startswith("@")
        )
        if k.startswith("m|")
        else v
        for k, v in first.table.items()
    }
    restart = NOON + timedelta(hours=5)
    restarted.apply(event, now=restart)
    assert restarted.total(b).events == 1
    restarted.apply(event, now=restart + timedelta(minutes=61))
    assert restarted.total(b).events == 2


def test_a_restarted_ledger_resumes_from_its_tables_without_realerting() -> None:
    b = budget()
    first = Ledger(b)
    first.apply(priced("0.6"))
    restarted = Ledger(b)
    restarted.table, restarted.batches = dict(first.table), first.batches
    assert restarted.apply(priced("0.3")) == []
    assert restarted.apply(priced("0.2")) == ["BREACH"]
    assert restarted.total(b).spend_usd == Decimal("1.1")


def test_an_organisation_budget_sums_every_partition() -> None:
    org = budget(scope={}, limit_usd="1.00", thresholds=["1.0"])
    ledger = Ledger(org)
    assert ledger.apply(priced("0.4", tenant="acme"), partition=0) == []
    assert ledger.apply(priced("0.4", tenant="globex"), partition=1) == []
    assert ledger.apply(priced("0.3", tenant="initech"), partition=2) == ["BREACH"]
    assert ledger.alerts[0].tenant == "*" and ledger.alerts[0].scope == {}
    start = org.window(NOON)[0]
    assert ledger.table[partial_key(org.id, start, 1)].startswith("0.4|")
    assert ledger.states[0].partition == 2 and ledger.states[0].spend_usd == Decimal("0.3")


def test_scopes_narrow_by_feature_key_and_model() -> None:
    feature = budget(scope={"tenant": "acme", "feature": "search"}, thresholds=["1.0"])
    key = budget(scope={"relay_key": "acme-batch"}, thresholds=["1.0"])
    model = budget(scope={"tenant": "acme", "model": "gpt-4o"}, thresholds=["1.0"])
    ledger = Ledger(feature, key, model)
    ledger.apply(priced("2", feature="chat", relay_key_id="acme-demo"))
    assert ledger.alerts == []
    ledger.apply(priced("2", feature="search"))
    assert [a.budget_id for a in ledger.alerts] == [feature.id]
    ledger.apply(priced("2", relay_key_id="acme-batch", served_model="gpt-4o"))
    assert {a.budget_id for a in ledger.alerts} == {key.id, model.id}


def test_token_and_request_limits_alert_like_money() -> None:
    b = budget(limit_usd=None, limit_tokens=300, limit_requests=5, thresholds=["1.0"])
    ledger = Ledger(b)
    assert ledger.apply(priced("0"), priced("0")) == []
    assert ledger.apply(priced("0")) == ["BREACH"]  # 330 tokens
    assert "330 tokens" in ledger.alerts[0].message
    assert ledger.apply(priced("0"), priced("0")) == ["BREACH"]  # the fifth request
    assert "requests" in ledger.alerts[0].message


def test_unpriced_events_count_tokens_but_no_money() -> None:
    b = budget(limit_tokens=1000)
    ledger = Ledger(b)
    unpriced = priced("0").model_copy(update={"price_status": "unpriced", "cost_usd": None})
    ledger.apply(unpriced)
    assert ledger.total(b).spend_usd == 0 and ledger.total(b).tokens == 110


def test_alert_ids_are_stable_per_budget_period_and_threshold() -> None:
    a, b = Ledger(budget()), Ledger(budget())
    a.apply(priced("2"))
    b.apply(priced("2"))
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts]
    assert len({x.alert_id for x in a.alerts}) == 2


def test_periods_reset_at_local_midnight() -> None:
    tokyo = budget(timezone="Asia/Tokyo", thresholds=["0.5"])
    ledger = Ledger(tokyo)
    before = datetime(2026, 11, 3, 14, 59, tzinfo=UTC)  # 23:59 in Tokyo
    after = datetime(2026, 11, 3, 15, 1, tzinfo=UTC)  # 00:01 the next day in Tokyo
    assert ledger.apply(priced("0.4", at=before), now=before) == []
    assert ledger.apply(priced("0.4", at=after), now=after) == []  # a new day: 0.4, not 0.8
    assert ledger.total(tokyo, after).spend_usd == Decimal("0.4")


def test_a_breach_recovers_once_when_the_period_ends() -> None:
    b = budget()
    ledger = Ledger(b)
    ledger.apply(priced("1.5"))
    assert ledger.ledger.review(ledger.table, NOON) == []
    tomorrow = datetime(2026, 11, 4, 0, 0, 5, tzinfo=UTC)
    recovered = ledger.ledger.review(ledger.table, tomorrow)
    assert [a.state for a in recovered] == ["RECOVERED"] and "period ended" in recovered[0].message
    assert ledger.ledger.review(ledger.table, tomorrow) == []


def test_a_raised_limit_recovers_the_budget() -> None:
    b = budget()
    ledger = Ledger(b)
    ledger.apply(priced("0.6"))
    ledger.book.put(b.model_copy(update={"limit_usd": Decimal("10")}))
    recovered = ledger.ledger.review(ledger.table, NOON)
    assert [a.state for a in recovered] == ["RECOVERED"]
    assert ledger.apply(priced("5")) == ["WARN"]  # the new limit's 50 %


def test_a_crash_that_lost_a_partial_but_kept_its_marks_counts_the_events_again() -> None:
    b = budget()
    ledger = Ledger(b)
    ledger.apply(priced("0.1"))
    durable = dict(ledger.table)
    batch = [priced("0.2"), priced("0.3")]
    ledger.apply(*batch)
    key = partial_key(b.id, b.window(NOON)[0], 0)
    crashed = Ledger(b)  # the marks of the batch reached the changelog, its partial did not
    crashed.table = {k: v for k, v in ledger.table.items() if k != key} | {key: durable[key]}
    crashed.batches = ledger.batches
    crashed.apply(*batch)  # redelivered from the last committed offset
    crashed.apply(*batch)  # and duplicated once more
    assert crashed.total(b).spend_usd == Decimal("0.6") and crashed.total(b).events == 3


def test_hard_budget_states_name_the_events_they_counted() -> None:
    b = budget(hard=True)
    ledger = Ledger(b)
    events = [priced("0.1"), priced("0.1")]
    ledger.apply(*events)
    assert ledger.states[0].counted == tuple(e.event_id for e in events)
    soft = Ledger(budget())
    soft.apply(*events)
    assert soft.states[0].counted == ()


def test_a_budget_across_tenants_alerts_once_standby_copies_show_its_crossing() -> None:
    """Two workers, each owning one partition and reading the other's from a standby copy that
    lags: neither batch crosses the limit where its worker sees it; the review that follows the
    catch-up does, on both workers, under one alert id."""
    org = budget(scope={}, limit_usd=None, limit_requests=100, thresholds=["1.0"])
    first, second = Ledger(org), Ledger(org)
    first.apply(*[priced("0", tenant="acme") for _ in range(60)], partition=0)
    second.apply(*[priced("0", tenant="globex") for _ in range(60)], partition=1)
    assert first.alerts == [] and second.alerts == []
    start = org.window(NOON)[0]
    for ledger, other, partition in ((first, second, 1), (second, first, 0)):
        key = partial_key(org.id, start, partition)
        ledger.table[key] = other.table[key]  # the standby copy catches up
    announced = [ledger.ledger.review(ledger.table, NOON) for ledger in (first, second)]
    assert [[a.state for a in alerts] for alerts in announced] == [["BREACH"], ["BREACH"]]
    assert announced[0][0].alert_id == announced[1][0].alert_id
    assert first.ledger.review(first.table, NOON) == []  # announced once per worker


def test_a_lowered_limit_alerts_at_the_next_review() -> None:
    b = budget(thresholds=["1.0"])
    ledger = Ledger(b)
    ledger.apply(priced("0.80"))
    ledger.book.put(b.model_copy(update={"limit_usd": Decimal("0.50")}))
    assert [a.state for a in ledger.ledger.review(ledger.table, NOON)] == ["BREACH"]


def test_after_a_restart_newer_marks_win_over_records_written_without_a_time() -> None:
    day = budget(limit_usd="100")
    feature = budget(scope={"tenant": "acme", "feature": "search"}, limit_usd="100")
    first = Ledger(day)
    event = priced("0.1", feature="search")
    first.apply(event, now=NOON)
    for key in [k for k in first.table if k.startswith("m|")]:  # as an earlier version wrote it
        record = first.table.pop(key)
        first.table["m|0|1"] = "\n".join(x for x in record.splitlines() if not x.startswith("@"))
    first.book.put(feature)
    first.apply(event, now=NOON + timedelta(minutes=1))  # counts for the new budget only
    restarted = Ledger(day, feature)
    restarted.table, restarted.batches = dict(first.table), first.batches
    restarted.apply(event, now=NOON + timedelta(minutes=2))
    assert restarted.total(day).events == 1 and restarted.total(feature).events == 1
