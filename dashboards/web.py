"""Serves the dashboard page; the page itself reads everything from the query API."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import plotly
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from warehouse.access import authenticated

router = APIRouter()

_STATIC = Path(__file__).with_name("static")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    """The page, to a logged-in viewer; anyone else is sent to the login form."""
    if authenticated(request) is None:
        here = "/" + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(here, safe='/')}", status_code=303)
    return HTMLResponse((_STATIC / "index.html").read_text())


@router.get("/static/dashboard.js")
async def script() -> Response:
    return Response((_STATIC / "dashboard.js").read_text(), media_type="application/javascript")


@router.get("/static/plotly.min.js")
async def plotly_js() -> FileResponse:
    """The charting library, served from the installed plotly package: the dashboard works
    offline and its charts always match the library version tokenops was tested with."""
    return FileResponse(_PLOTLY_JS, media_type="application/javascript")


_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
