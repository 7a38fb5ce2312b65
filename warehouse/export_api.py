"""Exports over HTTP: `GET /api/export/focus?period=2026-11&format=csv|parquet` returns a FOCUS 1.2
file as an attachment. The file is written by DuckDB in a worker thread into a temporary folder,
which is removed once the response has been sent (or the export failed)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from warehouse import focus
from warehouse.access import ViewerDep
from warehouse.query_api import StoreDep, _read

router = APIRouter(prefix="/api")


@router.get("/export/focus", response_class=FileResponse)
async def export_focus(
    store: StoreDep,
    viewer: ViewerDep,
    period: Annotated[str, Query(description="a month YYYY-MM, or days YYYY-MM-DD..YYYY-MM-DD")],
    fmt: Annotated[focus.Format, Query(alias="format")] = "csv",
    tenant: str | None = None,
) -> FileResponse:
    """The period's FOCUS 1.2 cost-and-usage rows of the tenants the viewer sees (or of one).
    Headers: X-Tokenops-Focus-Rows, X-Tokenops-Billed-Cost-Usd (the file's total) and
    X-Tokenops-Unpriced-Calls (not in it)."""
    tenants = viewer.scope(tenant)
    try:
        billing_period = focus.parse_period(period)
    except focus.FocusPeriodError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    folder = Path(tempfile.mkdtemp(prefix="tokenops-focus-"))
    filename = f"focus-{billing_period.label}.{fmt}"
    try:
        export: focus.FocusExport = await asyncio.to_thread(
            _read, store, focus.export_focus, billing_period, fmt, folder / filename, tenants
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        export.path,
        media_type=focus.MEDIA_TYPES[fmt],
        filename=filename,
        headers={
            "X-Tokenops-Focus-Version": focus.FOCUS_VERSION,
            "X-Tokenops-Focus-Rows": str(export.rows),
            "X-Tokenops-Billed-Cost-Usd": format(export.billed_cost.normalize(), "f"),
            "X-Tokenops-Unpriced-Calls": str(export.unpriced_calls),
        },
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
