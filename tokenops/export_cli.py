"""`tokenops export`: the warehouse in standard formats, fetched from the running warehouse service
(the only process that opens the DuckDB file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

export_app = typer.Typer(no_args_is_help=True, help="Export the warehouse in standard formats.")


class FileFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


@export_app.command()
def focus(
    period: Annotated[
        str, typer.Option(help="a month YYYY-MM, or days YYYY-MM-DD..YYYY-MM-DD (UTC)")
    ],
    file_format: Annotated[
        FileFormat, typer.Option("--format", help="csv, or parquet (DECIMAL(38,18) money)")
    ] = FileFormat.csv,
    out: Annotated[
        Path | None, typer.Option(help="where to write it (default: focus-<period>.<format>)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's charges")] = None,
) -> None:
    """Write one billing period as a FOCUS 1.2 cost-and-usage file."""
    from tokenops.settings import get_settings
    from tokenops.warehouse_client import warehouse_get
    from warehouse.focus import FOCUS_VERSION, parse_period

    parse_period(period)  # a malformed period is refused here, whether the service runs or not
    fmt = file_format.value
    response = warehouse_get(
        get_settings(), "/api/export/focus", {"period": period, "format": fmt, "tenant": tenant}
    )
    path = out or Path(f"focus-{period}{f'-{tenant}' if tenant else ''}.{fmt}")
    path.write_bytes(response.content)
    rows = response.headers.get("x-tokenops-focus-rows", "?")
    billed = response.headers.get("x-tokenops-billed-cost-usd", "?")
    typer.echo(f"{path}: {rows} FOCUS {FOCUS_VERSION} rows, BilledCost {billed} USD")
    unpriced = int(response.headers.get("x-tokenops-unpriced-calls", "0"))
    if unpriced:
        typer.echo(
            f"{unpriced} unpriced calls of the period are not in the file (no price for their "
            "model at their time): `tokenops prices check` lists the gaps",
            err=True,
        )
