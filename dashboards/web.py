"""Serves the dashboard page; the page itself reads everything from the query API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter()

_STATIC = Path(__file__).with_name("static")


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse((_STATIC / "index.html").read_text())


@router.get("/static/dashboard.js")
async def script() -> Response:
    return Response((_STATIC / "dashboard.js").read_text(), media_type="application/javascript")
