"""Prometheus metrics of the relay (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay.budget_gate import BudgetGate
from relay.usage_publisher import UsagePublisher


class RelayMetrics:
    def __init__(self, publisher: UsagePublisher, gate: BudgetGate) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tokenops_relay_requests",
            "Calls answered by the relay, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tokenops_relay_request_seconds",
            "Time to the relay's response headers (streams: to the first byte).",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.upstream_errors = Counter(
            "tokenops_relay_upstream_errors",
            "Upstream attempts that failed, by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        published = Gauge(
            "tokenops_relay_events_published",
            "Usage events acknowledged by Kafka.",
            registry=self.registry,
        )
        published.set_function(lambda: publisher.stats.published)
        spooled = Gauge(
            "tokenops_relay_events_spooled",
            "Usage events written to the disk spool.",
            registry=self.registry,
        )
        spooled.set_function(lambda: publisher.stats.spooled)
        depth = Gauge(
            "tokenops_relay_spool_depth",
            "Usage events waiting in the disk spool.",
            registry=self.registry,
        )
        depth.set_function(lambda: publisher.spool.depth)
        queued = Gauge(
            "tokenops_relay_publish_queue",
            "Usage events queued for the Kafka producer.",
            registry=self.registry,
        )
        queued.set_function(lambda: publisher.queued)
        budgets = Gauge(
            "tokenops_relay_budgets",
            "Budgets the hard gate knows (from the budgets file and topic).",
            registry=self.registry,
        )
        budgets.set_function(lambda: len(gate.book))
        holds = Gauge(
            "tokenops_relay_budget_holds",
            "Reservations and settled calls the budget ledger has not counted yet.",
            registry=self.registry,
        )
        holds.set_function(gate.holds)
