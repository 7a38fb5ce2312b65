"""The relay's hard budget gate: reserve before forwarding, settle on the event, release when the
ledger has counted it.

A background thread follows two compacted topics from their beginning (no consumer group: every
relay reads everything): the budgets (so run-time changes apply) and the ledger's budget state
(what each hard budget has used this period, per partition).

For a call that falls under a hard budget, `reserve` admits it only if

    used (counted by the ledger) + held (this relay's reservations and settled calls the
    ledger has not counted yet) + this call's estimate  <=  limit

for every limit of every hard budget it falls under, and then holds the estimate. The estimate is
an upper bound of the call's cost: every byte of the request body counted as an input token at
the model's dearest input rate, plus `max_tokens` (or the configured default) of output, for the
dearest of the model's targets. When the call's event is published the hold becomes the event's
actual cost; the hold is released when a budget state lists the event as counted, or expires
after `hold_ttl_s`.

Overshoot bound (stated in the README): with one relay, spend <= limit plus, for calls whose
actual cost exceeded the estimate (no max_tokens and a longer answer than the default), that
excess. With R relays each holds only its own calls: spend <= limit + the estimates in flight at
the other R-1 relays. A hold that expires before the ledger counts its event (the streams worker
down longer than hold_ttl_s) leaves that call's cost unguarded until the ledger catches up.

If the broker is away the gate keeps its last known states and holds (it fails open only for
budgets it has never seen used).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from ingest.budget_state import BudgetPartials, BudgetState, BudgetUsage
from ingest.pricing import Cost, Pricer, UsageInvariantError
from ingest.topics import BUDGET_STATE, BUDGETS
from ingest.usage_event import TokenCounts, UsageEvent
from relay.model_catalog import Target
from streams.budget_ledger import event_tokens, event_usd
from streams.budgets import Budget, BudgetBook

log = logging.getLogger(__name__)

ESTIMATE = "estimate"


@dataclass(frozen=True)
class CallScope:
    """What a budget scope is matched against before the call has an event."""

    tenant: str
    relay_key_id: str | None
    feature: str | None
    requested_model: str
    served_model: str


@dataclass
class Hold:
    usd: Decimal
    tokens: int
    requests: int
    expires: float


@dataclass
class Reservation:
    budgets: tuple[Budget, ...]
    hold_id: str
    estimate_usd: Decimal
    settled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    budget: Budget
    measure: str
    used: Decimal
    estimate: Decimal
    limit: Decimal
    period_end: datetime

    def message(self) -> str:
        money = self.measure == "usd"

        def show(value: Decimal) -> str:
            return f"${value}" if money else f"{value} {self.measure}"

        return (
            f"The {self.budget.period} budget for {self.budget.scope.label()} is "
            f"{show(self.limit)}; {show(self.used)} is used or reserved and this call could use "
            f"up to {show(self.estimate)}. Calls resume {self.period_end.isoformat()}."
        )


class BudgetGate:
    def __init__(
        self,
        bootstrap: str,
        budgets: Iterable[Budget] = (),
        pricer: Callable[[], Pricer] | None = None,
        *,
        default_output_tokens: int = 4096,
        hold_ttl_s: float = 120.0,
    ) -> None:
        self._bootstrap = bootstrap
        self.book = BudgetBook(budgets)
        self._pricer_factory = pricer or Pricer
        self._pricer: Pricer | None = None
        self._default_output_tokens = default_output_tokens
        self._hold_ttl_s = hold_ttl_s
        self._partials = BudgetPartials()
        self._holds: dict[str, dict[str, Hold]] = {}
        self._counted: dict[str, float] = {}
        """Event ids the ledger counted before their call settled here (a race), briefly."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-gate", daemon=True)
        self._sequence = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def pricer(self) -> Pricer:
        if self._pricer is None:
            self._pricer = self._pricer_factory()
        return self._pricer

    # the request path

    def reserve(
        self,
        call: CallScope,
        targets: Sequence[Target],
        body: dict[str, Any],
        body_bytes: int,
        *,
        with_output: bool = True,
        now: datetime | None = None,
    ) -> Reservation | Refusal | None:
        """Hold this call's estimate against every hard budget it falls under, or refuse it.
        None when no hard budget applies (nothing to settle)."""
        hard = [b for b in self.book.for_tenant(call.tenant) if b.hard and b.scope.matches(call)]
        if not hard:
            return None
        now = now or datetime.now(UTC)
        output = 0
        if with_output:
            output = _max_output_tokens(body) or self._default_output_tokens * _choices(body)
        estimate = {
            "usd": self.estimate_usd(targets, body_bytes, output, now),
            "tokens": Decimal(body_bytes + output),
            "requests": Decimal(1),
        }
        clock = time.monotonic()
        with self._lock:
            for budget in hard:
                start, end = budget.window(now)
                used = self._used(budget, start, end, clock)
                for measure, limit in budget.limits():
                    if used[measure] + estimate[measure] > limit:
                        return Refusal(
                            budget, measure, used[measure], estimate[measure], limit, end
                        )
            self._sequence += 1
            hold_id = f"{ESTIMATE}-{self._sequence}"
            hold = Hold(estimate["usd"], body_bytes + output, 1, clock + self._hold_ttl_s)
            for budget in hard:
                self._holds.setdefault(budget.id, {})[hold_id] = hold
        return Reservation(tuple(hard), hold_id, estimate["usd"])

    def settle(self, reservation: Reservation, event: UsageEvent) -> None:
        """Hold the event's actual cost until the ledger has counted it."""
        try:
            usd = event_usd(self.pricer.price_event(event))
        except UsageInvariantError:
            usd = reservation.estimate_usd  # the ledger will not count it; keep the estimate
        hold = Hold(usd, event_tokens(event), 1, time.monotonic() + self._hold_ttl_s)
        with self._lock:
            if self._counted.pop(event.event_id, None) is not None:
                return
            for budget in reservation.budgets:
                self._holds.setdefault(budget.id, {})[event.event_id] = hold

    def finish(self, reservation: Reservation) -> None:
        """The call is over (all its events settled): drop its estimate."""
        with self._lock:
            for budget in reservation.budgets:
                self._holds.get(budget.id, {}).pop(reservation.hold_id, None)

    def usage(self, budget: Budget, now: datetime | None = None) -> BudgetUsage:
        """What the ledger has counted for the budget's current period."""
        start, end = budget.window(now or datetime.now(UTC))
        with self._lock:
            return self._partials.usage(budget.id, start, end)

    def held(self, budget_id: str) -> int:
        with self._lock:
            return len(self._holds.get(budget_id, {}))

    def holds(self) -> int:
        with self._lock:
            return sum(len(holds) for holds in self._holds.values())

    def estimate_usd(
        self, targets: Sequence[Target], input_tokens: int, output_tokens: int, at: datetime
    ) -> Decimal:
        dearest = Decimal(0)
        for target in targets:
            for tokens in (
                TokenCounts(input_uncached=input_tokens, output=output_tokens),
                TokenCounts(cache_write_1h=input_tokens, output=output_tokens),
            ):
                cost = self.pricer.price(target.provider, target.model, tokens, at)
                if isinstance(cost, Cost):
                    dearest = max(dearest, cost.total_usd)
        return dearest

    def _used(
        self, budget: Budget, start: datetime, end: datetime, clock: float
    ) -> dict[str, Decimal]:
        counted = self._partials.usage(budget.id, start, end)
        used = {measure: counted.measure(measure) for measure in ("usd", "tokens", "requests")}
        holds = self._holds.get(budget.id, {})
        for hold_id, hold in list(holds.items()):
            if hold.expires < clock:
                del holds[hold_id]
                continue
            used["usd"] += hold.usd
            used["tokens"] += hold.tokens
            used["requests"] += hold.requests
        return used

    # the topics

    def apply_state(self, payload: bytes) -> None:
        try:
            state = BudgetState.model_validate_json(payload)
        except ValidationError:
            log.warning("ignoring an undecodable budget state record")
            return
        with self._lock:
            self._partials.apply(state)
            holds = self._holds.get(state.budget_id, {})
            clock = time.monotonic()
            for event_id in state.counted:
                if holds.pop(event_id, None) is None:
                    self._counted[event_id] = clock
            if len(self._counted) > 10_000:
                horizon = clock - self._hold_ttl_s
                self._counted = {k: t for k, t in self._counted.items() if t > horizon}

    def apply_budget(self, key: bytes | None, value: bytes | None) -> None:
        try:
            self.book.apply_record(key, value)
        except ValidationError:
            log.warning("ignoring an undecodable budget record")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    client_id="tokenops-relay-budget-gate",
                    enable_auto_commit=False,
                    consumer_timeout_ms=1000,
                    bootstrap_timeout_ms=5_000,
                    metrics_enabled=False,
                )
            except (KafkaError, OSError, ValueError):
                self._stop.wait(2.0)
                continue
            try:
                assigned = [
                    TopicPartition(topic, p)
                    for topic in (BUDGETS, BUDGET_STATE)
                    for p in consumer.partitions_for_topic(topic) or ()
                ]
                if not assigned:
                    self._stop.wait(2.0)
                    continue
                consumer.assign(assigned)
                consumer.seek_to_beginning()
                while not self._stop.is_set():
                    for partition, records in consumer.poll(timeout_ms=200).items():
                        for record in records:
                            if partition.topic == BUDGETS:
                                self.apply_budget(record.key, record.value)
                            elif record.value is not None:
                                self.apply_state(record.value)
            except (KafkaError, OSError) as exc:
                log.warning("budget gate lost Kafka at %s (%s); retrying", self._bootstrap, exc)
                self._stop.wait(2.0)
            finally:
                consumer.close()


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _max_output_tokens(body: dict[str, Any]) -> int | None:
    """The most output the request allows, over all its `n` choices."""
    n = _choices(body)
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * n
    return None
