"""Logging in to the dashboard: a form, a signed session cookie, and logging out.

Users and their password hashes are in access.yaml (warehouse.access). A failed login shows the
form again with a 401 and the same message whether the name or the password was wrong. After a
login the browser goes back to `next`, only ever a path on this site (never another host).
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from warehouse.access import AccessBook, Sessions, authenticated

router = APIRouter()

_FORM = Template((Path(__file__).with_name("static") / "login.html").read_text())
_MAX_FORM_BYTES = 8 * 1024


def local_path(target: str | None) -> str:
    """`target` if it is a path on this site, else `/` (no open redirect to another host)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _page(
    next_path: str, username: str = "", error: str | None = None, status: int = 200
) -> Response:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _FORM.substitute(
        error=message, username=html.escape(username), next=html.escape(next_path)
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> Response:
    target = local_path(next)
    if authenticated(request) is not None:
        return RedirectResponse(target, status_code=303)
    return _page(target)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    body = await request.body()
    fields = parse_qs(body[:_MAX_FORM_BYTES].decode(errors="replace"), max_num_fields=10)
    username = fields.get("username", [""])[0].strip()
    password = fields.get("password", [""])[0]
    target = local_path(fields.get("next", ["/"])[0])
    book: AccessBook | None = getattr(request.app.state, "access", None)
    sessions: Sessions | None = getattr(request.app.state, "sessions", None)
    if book is None or sessions is None or not book.configured:
        return _page(target, username, "Logging in is not configured (no access.yaml).", 401)
    # scrypt takes tens of milliseconds: off the event loop.
    viewer = await asyncio.to_thread(book.login, username, password) if username else None
    if viewer is None:
        return _page(target, username, "Wrong user name or password.", 401)
    response = RedirectResponse(target, status_code=303)
    sessions.start(response, request, book, viewer.name)
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    Sessions.end(response)
    return response
