"""The query API: JSON over HTTP, money as decimal strings. Read-only; runs queries on cursors
in worker threads so the loader and the event loop are never blocked by a query. Every route
needs a viewer (warehouse.access) and reads only the tenants that viewer may see."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from ingest.loader import WarehouseLoader
from warehouse import queries
from warehouse.access import AdminDep, ViewerDep
from warehouse.store import WarehouseStore

router = APIRouter(prefix="/api")


def current_store(request: Request) -> WarehouseStore:
    store: WarehouseStore = request.app.state.store
    return store


StoreDep = Annotated[WarehouseStore, Depends(current_store)]


def _read(store: WarehouseStore, func: Any, *args: Any, **kwargs: Any) -> Any:
    with store.cursor() as cur:
        return func(cur, *args, **kwargs)


@router.get("/costs")
async def costs(
    store: StoreDep,
    viewer: ViewerDep,
    group_by: Annotated[str, Query(description="comma-separated dimensions")] = "tenant",
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    feature: str | None = None,
    model: Annotated[str | None, Query(description="the served model")] = None,
) -> dict[str, Any]:
    dimensions = [g.strip() for g in group_by.split(",") if g.strip()]
    tenants = viewer.scope(tenant)
    try:
        rows = await asyncio.to_thread(
            _read,
            store,
            queries.cost_rows,
            dimensions,
            start,
            end,
            feature=feature,
            model=model,
            tenants=tenants,
        )
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return {"group_by": dimensions, "rows": rows}


@router.get("/alerts")
async def alerts(
    store: StoreDep,
    viewer: ViewerDep,
    tenant: str | None = None,
    kind: Literal["budget", "anomaly", "unpriced"] | None = None,
) -> dict[str, Any]:
    tenants = viewer.scope(tenant)
    rows = await asyncio.to_thread(_read, store, queries.alert_rows, None, kind, tenants=tenants)
    return {"alerts": rows}


@router.get("/alert-deliveries")
async def alert_deliveries(
    store: StoreDep, viewer: ViewerDep, alert_id: str | None = None, webhook: str | None = None
) -> dict[str, Any]:
    """Webhook delivery attempts: delivered, retrying (another attempt follows), failed, or
    expired (too old when its delivery would have begun: not posted)."""
    rows = await asyncio.to_thread(
        _read, store, queries.delivery_rows, alert_id, webhook, tenants=viewer.tenants
    )
    return {"deliveries": rows}


@router.get("/corrections")
async def corrections(
    store: StoreDep, viewer: ViewerDep, tenant: str | None = None
) -> dict[str, Any]:
    """Re-pricing entries written when price versions were added (append-only)."""
    tenants = viewer.scope(tenant)
    rows = await asyncio.to_thread(_read, store, queries.correction_rows, tenants=tenants)
    return {"corrections": rows}


@router.get("/status")
async def status(request: Request, viewer: AdminDep) -> dict[str, Any]:
    loader: WarehouseLoader = request.app.state.loader
    stats = loader.stats
    return {
        "consumed": stats.consumed,
        "loaded": stats.loaded,
        "duplicates": stats.duplicates,
        "alerts": stats.alerts,
        "quarantined": stats.quarantined,
        "corrections": stats.corrections,
        "last_load_at": stats.last_load_at.isoformat() if stats.last_load_at else None,
    }
