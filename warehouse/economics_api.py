"""The unit-economics API: unit costs, gross margins, weekly movers and prompt versions.

JSON, money as decimal strings (definitions and rounding: warehouse.economics). Queries run on
cursors in worker threads and read only the tenants the viewer may see (warehouse.access). A
parameter the query cannot use (an unknown dimension, a malformed period or week, start after
end) is a 400 naming it; a wrongly typed one is FastAPI's 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from warehouse import economics
from warehouse.access import ViewerDep
from warehouse.query_api import StoreDep
from warehouse.store import WarehouseStore

router = APIRouter(prefix="/api", tags=["unit economics"])

GroupBy = Annotated[
    str, Query(description=f"comma-separated, from {', '.join(economics.DIMENSIONS)}")
]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


async def _query(store: WarehouseStore, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    def read() -> Any:
        with store.cursor() as cur:
            return func(cur, *args, **kwargs)

    try:
        return await asyncio.to_thread(read)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


@router.get("/unit-costs")
async def unit_costs(
    store: StoreDep,
    viewer: ViewerDep,
    group_by: GroupBy = "tenant",
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    feature: str | None = None,
    model: Annotated[str | None, Query(description="the served model")] = None,
) -> dict[str, Any]:
    """Requests, tokens, cost, cost per request / successful request / 1,000 tokens, error and
    fallback cost and cache savings, per group."""
    dimensions = _names(group_by)
    tenants = viewer.scope(tenant)
    rows = await _query(
        store,
        economics.unit_costs,
        dimensions,
        start,
        end,
        None,
        feature,
        model=model,
        tenants=tenants,
    )
    return {"group_by": dimensions, "rows": rows}


@router.get("/margins")
async def margins(
    store: StoreDep,
    viewer: ViewerDep,
    period: Annotated[
        str | None, Query(description="2026-11, 2026-Q4 or 2026 (default: this month, UTC)")
    ] = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Gross margin per tenant: revenue, cost, margin and margin %, least profitable first."""
    tenants = viewer.scope(tenant)
    result: dict[str, Any] = await _query(
        store, economics.margins, period or economics.current_month(), tenants=tenants
    )
    return result


@router.get("/movers")
async def movers(
    store: StoreDep,
    viewer: ViewerDep,
    group_by: GroupBy = "tenant",
    week: Annotated[
        str | None, Query(description="ISO week, e.g. 2026-W47 (default: the last complete one)")
    ] = None,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """Week-over-week cost movers, largest absolute change first."""
    tenants = viewer.scope(tenant)
    result: dict[str, Any] = await _query(
        store,
        economics.movers,
        _names(group_by),
        week or economics.last_complete_week(),
        None,
        limit,
        tenants=tenants,
    )
    return result


@router.get("/prompt-versions")
async def prompt_versions(
    store: StoreDep,
    viewer: ViewerDep,
    feature: str | None = None,
    tenant: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Prompt versions side by side: cost, tokens and latency per request, error rate."""
    tenants = viewer.scope(tenant)
    rows = await _query(
        store, economics.prompt_versions, feature, None, start, end, tenants=tenants
    )
    return {"feature": feature, "rows": rows}
