"""The warehouse service: the only DuckDB writer, its loader, the query API and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from dashboards.login import router as login_router
from dashboards.web import router as dashboard_router
from ingest.loader import WarehouseLoader
from ingest.quality import CallChecks
from relay.tenants import TenantDirectory
from streams.budget_registry import BudgetRegistry
from streams.budgets import load_budgets
from tokenops.broker import require_broker
from tokenops.settings import Settings, get_settings, load_pricer
from warehouse.access import AccessBook, Sessions, ViewerDep, session_secret
from warehouse.budgets_api import router as budgets_router
from warehouse.economics_api import router as economics_router
from warehouse.export_api import router as export_router
from warehouse.ingest_api import router as ingest_router
from warehouse.ingest_api import take_snapshot
from warehouse.overview import router as overview_router
from warehouse.query_api import router as query_router
from warehouse.report_api import router as report_router
from warehouse.revenue import load_revenue, sync_revenue
from warehouse.store import WarehouseStore

log = logging.getLogger("tokenops.warehouse")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    require_broker(settings.bootstrap)
    tenants = TenantDirectory.load(settings.config_dir / "tenants.yaml").names
    viewers = AccessBook.load(settings.config_dir / "access.yaml", tenants)
    revenue = load_revenue(settings.config_dir / "revenue.yaml")
    store = WarehouseStore(
        settings.warehouse_path,
        role=f"tokenops warehouse service, API on "
        f"http://{settings.warehouse_host}:{settings.warehouse_port}",
    )
    store.sync_tenants(tenants)
    sync_revenue(store, revenue)
    loader = WarehouseLoader(settings.bootstrap, store, load_pricer(settings), CallChecks(tenants))
    budgets = BudgetRegistry(settings.bootstrap, load_budgets(settings.config_dir / "budgets.yaml"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await asyncio.to_thread(loader.reconcile_price_versions)

        async def supervise() -> None:
            # The loader must outlive broker hiccups: restart it, never take the API down.
            while not stop.is_set():
                try:
                    await loader.run(stop)
                except Exception:
                    log.exception("warehouse loader failed; restarting in 2 s")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 2.0)

        async def snapshots() -> None:
            interval = settings.snapshot_interval_s
            while interval and not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                if not stop.is_set():
                    try:
                        await asyncio.to_thread(
                            take_snapshot, store, settings.snapshots_dir, settings.snapshot_keep
                        )
                    except Exception:
                        log.exception("Parquet snapshot failed; the next one is in %s s", interval)

        await budgets.start()
        tasks = [
            asyncio.create_task(supervise()),
            asyncio.create_task(budgets.follow(stop)),
            asyncio.create_task(snapshots()),
        ]
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*tasks), 15.0)
            await budgets.close()
            store.close()

    # The API docs and schema are served below, to logged-in viewers only.
    app = FastAPI(
        title="tokenops warehouse",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.access = viewers
    app.state.sessions = Sessions(session_secret(settings))
    app.state.store = store
    app.state.loader = loader
    app.state.budgets = budgets
    app.state.settings = settings
    app.include_router(query_router)
    app.include_router(economics_router)
    app.include_router(budgets_router)
    app.include_router(export_router)
    app.include_router(ingest_router)
    app.include_router(overview_router)
    app.include_router(report_router)
    app.include_router(dashboard_router)
    app.include_router(login_router)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi(viewer: ViewerDep) -> dict[str, object]:
        return app.openapi()

    @app.get("/api/docs", include_in_schema=False)
    async def docs(viewer: ViewerDep) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="tokenops warehouse API")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
