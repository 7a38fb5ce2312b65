"""The CLI's way into the warehouse: the service's query API over HTTP.

The warehouse service is the only process that opens the DuckDB file, so every command that
reads it (`tokenops report`, `tokenops export`) asks the running service, with the same numbers
the dashboard shows. It sends `TOKENOPS_API_TOKEN` as a bearer token: the service answers only
for the tenants that token may see (access.yaml).
"""

from __future__ import annotations

from typing import Any

import httpx

from tokenops.errors import TokenopsError
from tokenops.settings import Settings


class WarehouseUnavailable(TokenopsError):
    pass


def warehouse_url(settings: Settings) -> str:
    return f"http://{settings.warehouse_host}:{settings.warehouse_port}"


def warehouse_get(
    settings: Settings, path: str, params: dict[str, Any] | None = None, timeout_s: float = 120.0
) -> httpx.Response:
    """GET `path` from the running warehouse service; a refused connection or an error status
    becomes one clear WarehouseUnavailable / TokenopsError line."""
    url = warehouse_url(settings)
    clean = {k: v for k, v in (params or {}).items() if v is not None}
    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    try:
        response = httpx.get(f"{url}{path}", params=clean, headers=headers, timeout=timeout_s)
    except httpx.TransportError as exc:
        raise WarehouseUnavailable(
            f"cannot reach the warehouse service at {url} ({exc.__class__.__name__}); "
            "start it with `tokenops warehouse` or `tokenops up`"
        ) from None
    if response.status_code == 401:
        problem = "was refused" if headers else "needs an API token"
        raise TokenopsError(
            f"the warehouse service at {url} {problem} (HTTP 401): set TOKENOPS_API_TOKEN "
            "to an API token from access.yaml"
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise TokenopsError(f"{path}: HTTP {response.status_code}: {detail}")
    return response
