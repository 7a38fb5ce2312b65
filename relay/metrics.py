"""Prometheus metrics of the relay (served at /metrics).

One relay process keeps them in memory. Relay workers sharing a port (TOKENOPS_RELAY_WORKERS)
write them to memory-mapped files in PROMETHEUS_MULTIPROC_DIR, and whichever worker answers a
scrape sums them: counters and histograms add up (a worker that is gone still counts), and each
worker refreshes its gauges every second (summed over the live workers, except the budgets
count, which every worker has the same of).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from relay.budget_gate import BudgetGate
from relay.usage_publisher import UsagePublisher
from tokenops.processes import pid_alive

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
GaugeMode = Literal["livesum", "livemax"]


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROCESS_DIR)
    return Path(value) if value else None


class RelayMetrics:
    def __init__(self, publisher: UsagePublisher, gate: BudgetGate) -> None:
        self._publisher = publisher
        self._gate = gate
        self.shared = multiprocess_dir()
        # With workers, the live values are in the shared files: nothing registers in-process.
        own = None if self.shared else CollectorRegistry()
        self._own = own
        self.requests = Counter(
            "tokenops_relay_requests",
            "Calls answered by the relay, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "tokenops_relay_request_seconds",
            "Time to the relay's response headers (streams: to the first byte).",
            ["endpoint"],
            registry=own,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self._answered: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self.upstream_errors = Counter(
            "tokenops_relay_upstream_errors",
            "Upstream attempts that failed, by provider and outcome.",
            ["provider", "outcome"],
            registry=own,
        )

        def gauge(name: str, text: str, mode: GaugeMode = "livesum") -> Gauge:
            return Gauge(name, text, registry=own, multiprocess_mode=mode)

        # Counters, so that a worker that is gone still counts in the totals.
        self._published = Counter(
            "tokenops_relay_events_published",
            "Usage events acknowledged by Kafka.",
            registry=own,
        )
        self._spooled = Counter(
            "tokenops_relay_events_spooled",
            "Usage events written to the disk spool.",
            registry=own,
        )
        self._counted = (0, 0)
        self._depth = gauge("tokenops_relay_spool_depth", "Usage events waiting in the disk spool.")
        self._queued = gauge(
            "tokenops_relay_publish_queue", "Usage events queued for the Kafka producer."
        )
        self._budgets = gauge(
            "tokenops_relay_budgets",
            "Budgets the hard gate knows (from the budgets file and topic).",
            "livemax",
        )
        self._holds = gauge(
            "tokenops_relay_budget_holds",
            "Reservations and settled calls the budget ledger has not counted yet.",
        )

    def count(self, endpoint: str, status: int) -> None:
        """One answered call (the labelled child is looked up once per endpoint and status)."""
        child = self._answered.get((endpoint, status))
        if child is None:
            child = self._answered[(endpoint, status)] = self.requests.labels(endpoint, str(status))
        child.inc()

    def observe(self, endpoint: str, seconds: float) -> None:
        child = self._latency.get(endpoint)
        if child is None:
            child = self._latency[endpoint] = self.latency.labels(endpoint)
        child.observe(seconds)

    def refresh(self) -> None:
        """Copy this process's publisher and gate state into the gauges."""
        publisher = self._publisher
        published, spooled = publisher.stats.published, publisher.stats.spooled
        self._published.inc(published - self._counted[0])
        self._spooled.inc(spooled - self._counted[1])
        self._counted = (published, spooled)
        self._depth.set(publisher.spool.depth)
        self._queued.set(publisher.queued)
        self._budgets.set(len(self._gate.book))
        self._holds.set(self._gate.holds())

    def registry(self) -> CollectorRegistry:
        """What a scrape reads: this process, or every live worker's shared files."""
        self.refresh()
        if self.shared is None:
            assert self._own is not None  # one process registers in memory
            return self._own
        forget_dead_workers(self.shared)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return combined


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that are gone (a worker that was replaced), so they
    no longer count in the sums."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))
