"""What every relay request needs, built once at start-up and held on the app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from yarl import URL

from ingest.usage_event import UsageEvent
from relay.budget_gate import BudgetGate, Reservation
from relay.circuit_breaker import CircuitBreakers
from relay.errors import AuthenticationFailed
from relay.metrics import RelayMetrics
from relay.model_catalog import ModelCatalog
from relay.spool import SpoolSlot
from relay.tenants import Caller, TenantDirectory
from relay.upstream import Upstream
from relay.usage_publisher import UsagePublisher
from tokenops.settings import Settings


@dataclass
class Relay:
    settings: Settings
    catalog: ModelCatalog
    tenants: TenantDirectory
    upstream: Upstream
    """Where calls go. It keeps no cookies, which would carry one tenant's upstream cookies
    into another's calls."""
    publisher: UsagePublisher
    breakers: CircuitBreakers
    gate: BudgetGate
    metrics: RelayMetrics
    spool_slot: SpoolSlot
    _urls: dict[tuple[str, str], URL] = field(default_factory=dict)

    def upstream_url(self, base_url: str, path: str) -> URL:
        """The parsed URL of a target's endpoint (parsing one costs more than the rest of
        building the request)."""
        url = self._urls.get((base_url, path))
        if url is None:
            url = self._urls[(base_url, path)] = URL(f"{base_url}{path}")
        return url

    def publish(self, event: UsageEvent, reservation: Reservation | None = None) -> None:
        self.publisher.publish(event)
        if reservation is not None:
            self.gate.settle(reservation, event)
        if event.outcome != "ok":
            self.metrics.upstream_errors.labels(event.provider, event.outcome).inc()


async def current_relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


async def current_caller(request: Request) -> Caller:
    relay: Relay = request.app.state.relay
    return caller_for(relay, request.headers)


def caller_for(relay: Relay, headers: Mapping[str, str]) -> Caller:
    """The caller a request's key names (OpenAI's bearer token or Anthropic's x-api-key)."""
    header = headers.get("authorization")
    if header:
        scheme, _, key = header.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
    else:
        key = headers.get("x-api-key", "")
    if not key:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send your relay key as 'Authorization: Bearer <key>'."
        )
    caller = relay.tenants.authenticate(key)
    if caller is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    return caller


RelayDep = Annotated[Relay, Depends(current_relay)]
CallerDep = Annotated[Caller, Depends(current_caller)]
