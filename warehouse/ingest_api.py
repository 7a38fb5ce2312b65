"""How the load is going: the conservation report, the quarantine, totals and snapshots.

These records span tenants (a quarantined record may not even name one), so only a viewer who
sees every tenant may read them or take a snapshot."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from warehouse import queries
from warehouse.access import AdminDep
from warehouse.query_api import StoreDep, _read
from warehouse.store import WarehouseStore

router = APIRouter(prefix="/api")


@router.get("/ingest/conservation")
async def conservation(
    store: StoreDep, viewer: AdminDep, topic: str | None = None, since: datetime | None = None
) -> dict[str, Any]:
    """Per topic, partition and hour: consumed = loaded + quarantined + duplicates."""
    report: dict[str, Any] = await asyncio.to_thread(
        _read, store, queries.conservation_rows, topic, since
    )
    return report


@router.get("/quarantine")
async def quarantine(
    store: StoreDep,
    viewer: AdminDep,
    stage: Literal["decode", "pricing", "expectations"] | None = None,
    topic: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """Records the loader refused, with the stage and the reason (the failed expectation)."""
    found: dict[str, Any] = await asyncio.to_thread(
        _read, store, queries.quarantine_rows, stage, topic, limit
    )
    return found


@router.get("/ingest/totals")
async def totals(store: StoreDep, viewer: AdminDep) -> dict[str, Any]:
    found: dict[str, Any] = await asyncio.to_thread(_read, store, queries.warehouse_totals)
    return found


def take_snapshot(store: WarehouseStore, root: Path, keep: int) -> Path:
    """A new Parquet snapshot under `root`; only the newest `keep` are kept."""
    folder = store.snapshot(root)
    old = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for stale in old[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


@router.post("/snapshots")
async def snapshot(request: Request, store: StoreDep, viewer: AdminDep) -> dict[str, Any]:
    """Write a Parquet snapshot now (also written every `TOKENOPS_SNAPSHOT_INTERVAL_S`)."""
    settings = request.app.state.settings
    folder = await asyncio.to_thread(
        take_snapshot, store, settings.snapshots_dir, settings.snapshot_keep
    )
    return {"path": str(folder.resolve()), "files": sorted(p.name for p in folder.iterdir())}
