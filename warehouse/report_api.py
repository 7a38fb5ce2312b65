"""The monthly report as a file: GET /api/reports/monthly?period=2026-11&tenant=acme&format=pdf.

The report (warehouse.monthly_report) is built and rendered in a worker thread, limited to the
tenants the viewer may see: a tenant outside them is a 403, a period that is not a month a 400.
The headline spend rides along in the X-Report-Spend-USD header, so a client can say what it
saved without reading the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response

from warehouse.access import ViewerDep
from warehouse.monthly_report import (
    MonthlyReport,
    build_report,
    file_name,
    month_bounds,
    to_csv,
)
from warehouse.query_api import StoreDep
from warehouse.report_documents import to_html, to_pdf

router = APIRouter(prefix="/api/reports", tags=["reports"])

Format = Literal["html", "pdf", "csv"]
RENDERERS: dict[Format, tuple[str, Callable[[MonthlyReport], str | bytes]]] = {
    "html": ("text/html; charset=utf-8", to_html),
    "pdf": ("application/pdf", to_pdf),
    "csv": ("text/csv; charset=utf-8", to_csv),
}


@router.get("/monthly")
async def monthly_report(
    store: StoreDep,
    viewer: ViewerDep,
    period: Annotated[str, Query(description="a month, e.g. 2026-11 (UTC)")],
    tenant: Annotated[str | None, Query(description="one tenant (default: all you see)")] = None,
    format: Format = "html",
) -> Response:
    """One month's cost report for one tenant or every tenant the viewer sees, as an
    attachment: headline, spend by tenant, feature, model and prompt version, daily spend,
    alerts, and the change against the previous month."""
    tenants = viewer.scope(tenant)
    try:
        month_bounds(period)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    media_type, render = RENDERERS[format]

    def read() -> tuple[MonthlyReport, str | bytes]:
        with store.cursor() as cur:
            report = build_report(cur, period, tenant, tenants)
        return report, render(report)

    report, body = await asyncio.to_thread(read)
    name = file_name(report.period, report.tenant, format)
    return Response(
        content=body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Report-Spend-USD": report.headline["cost_usd"],
        },
    )
