"""The relay application: routes, error mapping and the start-up wiring."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from relay import routes
from relay.budget_gate import BudgetGate
from relay.circuit_breaker import CircuitBreakers
from relay.errors import InvalidRequest, RelayError
from relay.metrics import RelayMetrics, forget_dead_workers
from relay.model_catalog import ModelCatalog
from relay.spool import SpoolSlot
from relay.state import CallerDep, Relay, RelayDep
from relay.tenants import TenantDirectory
from relay.upstream import Upstream
from relay.usage_publisher import UsagePublisher
from streams.budgets import load_budgets
from tokenops.broker import port_is_open
from tokenops.settings import Settings, get_settings, load_pricer

log = logging.getLogger("tokenops.relay")


def build_relay(settings: Settings) -> Relay:
    slot = SpoolSlot.claim(settings.spool_dir)
    publisher = UsagePublisher(settings.bootstrap, slot.directory, adopt=slot.adopt_unheld)
    gate = BudgetGate(
        settings.bootstrap,
        load_budgets(settings.config_dir / "budgets.yaml"),
        lambda: load_pricer(settings),
        default_output_tokens=settings.reservation_output_tokens,
        hold_ttl_s=settings.request_deadline_s + settings.reservation_confirm_s,
    )
    return Relay(
        settings=settings,
        catalog=ModelCatalog.load(settings.config_dir / "models.yaml", settings),
        tenants=TenantDirectory.load(settings.config_dir / "tenants.yaml"),
        upstream=Upstream(max_connections=1000),
        publisher=publisher,
        breakers=CircuitBreakers(settings.breaker_failures, settings.breaker_cooldown_s),
        gate=gate,
        metrics=RelayMetrics(publisher, gate),
        spool_slot=slot,
    )


async def refresh_metrics(metrics: RelayMetrics, shared: Path) -> None:
    """Keep this worker's gauges current in the shared files every scrape reads, and drop
    those of workers that are gone."""
    while True:
        metrics.refresh()
        forget_dead_workers(shared)
        await asyncio.sleep(1.0)


def error_response(request: Request, error: RelayError) -> Response:
    """The error in the caller's protocol: Anthropic's envelope on /v1/messages."""
    protocol = "anthropic" if request.url.path.endswith("/v1/messages") else "openai"
    return routes.error_response(error, protocol)


def route_path(scope: Scope) -> str:
    """The request's path below the root path the server was given (as Starlette routes)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


class RelayApp:
    """The relay's ASGI application: a POST to a model endpoint goes straight to
    `routes.serve`; everything else (lifespan, /v1/models, health, metrics, the OpenAPI
    document, wrong methods) to the FastAPI app. The FastAPI routes of the model endpoints
    answer the same way, through the same function."""

    def __init__(self, api: FastAPI, relay: Relay) -> None:
        self.api = api
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = routes.MODEL_PATHS.get(route_path(scope))
            if endpoint is not None:
                await routes.serve(self.relay, endpoint, scope, receive, send)
                return
        await self.api(scope, receive, send)


def create_app(settings: Settings | None = None) -> RelayApp:
    settings = settings or get_settings()
    relay = build_relay(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        host, _, port = settings.bootstrap.split(",")[0].rpartition(":")
        if not port_is_open(host or "127.0.0.1", int(port), timeout=1.0):
            log.warning(
                "cannot reach Kafka at %s; serving anyway, usage events go to the disk spool "
                "until it answers",
                settings.bootstrap,
            )
        relay.publisher.start()
        relay.gate.start()
        refresher = None
        if relay.metrics.shared is not None:
            refresher = asyncio.create_task(refresh_metrics(relay.metrics, relay.metrics.shared))
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
            await relay.upstream.close()
            relay.gate.close()
            relay.publisher.close()
            relay.spool_slot.release()

    app = FastAPI(title="tokenops relay", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.relay = relay
    app.include_router(routes.router)

    @app.get("/metrics")
    async def metrics(relay: RelayDep) -> Response:
        return Response(generate_latest(relay.metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(_: CallerDep, relay: RelayDep) -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": targets[0].provider}
            for name in relay.catalog.model_names
            if (targets := relay.catalog.resolve(name))
        ]
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(relay: RelayDep) -> JSONResponse:
        publisher = relay.publisher
        body = {
            "broker": "up" if publisher.broker_healthy else "unreachable",
            "bootstrap": relay.settings.bootstrap,
            "worker": relay.spool_slot.number,
            "workers": relay.settings.relay_workers,
            "spool_depth": publisher.spool.depth,
            "queued": publisher.queued,
            "published": publisher.stats.published,
            "circuits": relay.breakers.states(),
        }
        return JSONResponse(body, status_code=200 if publisher.broker_healthy else 503)

    @app.exception_handler(RelayError)
    async def relay_error(request: Request, exc: RelayError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        error = RelayError(str(exc.detail))
        error.status, error.error_type, error.code = exc.status_code, "invalid_request_error", None
        return error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, InvalidRequest(f"Invalid request: {exc.errors()[:3]}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected relay error")
        return error_response(request, routes.UNEXPECTED)

    return RelayApp(app, relay)


def create_worker_app() -> RelayApp:
    """The app of one relay worker process (`TOKENOPS_RELAY_WORKERS` > 1): each process logs
    like the relay and builds its own publisher, spool slot and budget gate, and shuts down
    (spooling what it holds) if the relay's parent process disappears."""
    from tokenops.cli import configure_logging

    configure_logging()
    threading.Thread(
        target=_stop_when_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    return create_app()


def _stop_when_orphaned(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL never reaches the workers) would keep the port
    and its spool slot forever: it stops itself the graceful way instead."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("the relay's parent process %d is gone; this worker stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)
