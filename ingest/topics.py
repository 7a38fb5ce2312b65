"""Every Kafka topic tokenops uses, in one place.

Usage events are keyed by tenant so that one tenant's events stay in order on one partition and
per-tenant ledgers are co-partitioned with their input.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


USAGE_EVENTS = "tokenops.usage.v1"
PRICED_USAGE = "tokenops.usage.priced.v1"
BUDGET_STATE = "tokenops.budget.state.v1"
ALERTS = "tokenops.alerts.v1"
DEAD_LETTERS = "tokenops.deadletter.v1"
PRICE_VERSIONS = "tokenops.prices.v1"
BUDGETS = "tokenops.budgets.v1"
ALERT_DELIVERIES = "tokenops.alert-deliveries.v1"
USAGE_IMPORTS = "tokenops.usage.imports.v1"
"""Historical usage loaded with `tokenops ingest import`: read by the warehouse only, so old
calls never reach live budgets or anomaly baselines, and replay rebuilds them like the rest."""

PIPELINE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(USAGE_EVENTS, partitions=3),
    TopicSpec(PRICED_USAGE, partitions=3),
    TopicSpec(BUDGET_STATE, partitions=3, compacted=True),
    TopicSpec(ALERTS, partitions=1),
    TopicSpec(DEAD_LETTERS, partitions=1),
    TopicSpec(PRICE_VERSIONS, partitions=1, compacted=True),
    TopicSpec(BUDGETS, partitions=1, compacted=True),
    TopicSpec(ALERT_DELIVERIES, partitions=1),
    TopicSpec(USAGE_IMPORTS, partitions=1),
)
