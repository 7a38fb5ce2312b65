"""`tokenops report`: unit economics from the running warehouse service, as tables or JSON, and
the monthly cost report as a file (`tokenops report --period 2026-11`).

Every command asks the warehouse service's API (the only process that opens the DuckDB file), so
it shows the numbers the dashboard shows. Tables round money to 6 decimal places for reading;
`--json` prints the API's exact figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tokenops.errors import TokenopsError
from tokenops.settings import get_settings
from tokenops.warehouse_client import warehouse_get

report_app = typer.Typer(
    invoke_without_command=True,
    help="Unit economics from the warehouse: costs, margins, movers, prompt versions; "
    "with --period, the monthly cost report.",
)

Kind = Literal["text", "figure", "count", "money", "pct", "number"]
"""text is left-aligned; the others are right-aligned (figure: a preformatted number)."""
SHOWN_PLACES = {"money": Decimal("0.000001"), "pct": Decimal("0.01"), "number": Decimal("0.01")}


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: Kind = "text"


def cell(value: Any, kind: Kind) -> str:
    """One table cell: '-' for nothing, decimal strings to a fixed number of places."""
    if value is None:
        return "-"
    if kind == "count":
        return f"{value:,}"
    if kind in SHOWN_PLACES:
        shown = f"{Decimal(value).quantize(SHOWN_PLACES[kind]):,}"
        return f"{shown}%" if kind == "pct" else shown
    return str(value)


def render_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns: text to the left, numbers to the right (so decimal points line up)."""
    cells = [[cell(row.get(c.key), c.kind) for c in columns] for row in rows]
    widths = [
        max([len(c.header), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(width) if column.kind == "text" else value.rjust(width)
            for value, width, column in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join([line([c.header for c in columns]), line(rule), *map(line, cells)])


def _get(path: str, params: dict[str, Any]) -> Any:
    return warehouse_get(get_settings(), path, params).json()


def _print(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else text)


def _dimension_columns(names: Sequence[str]) -> list[Column]:
    return [Column(name, name.replace("_", " ")) for name in names]


JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON (exact figures)")]
Start = Annotated[str | None, typer.Option(help="from this date or ISO time (UTC), included")]
End = Annotated[str | None, typer.Option(help="to this date or ISO time (UTC), excluded")]
Tenant = Annotated[str | None, typer.Option(help="only this tenant")]

UNIT_COST_COLUMNS = [
    Column("requests", "requests", "count"),
    Column("successful_requests", "ok", "count"),
    Column("tokens", "tokens", "count"),
    Column("cost_usd", "cost $", "money"),
    Column("cost_per_request_usd", "$/request", "money"),
    Column("cost_per_successful_request_usd", "$/ok request", "money"),
    Column("cost_per_1k_tokens_usd", "$/1k tokens", "money"),
    Column("error_cost_usd", "errors $", "money"),
    Column("fallback_cost_usd", "fallbacks $", "money"),
    Column("cache_savings_usd", "cache saved $", "money"),
]


class ReportFormat(StrEnum):
    html = "html"
    pdf = "pdf"
    csv = "csv"


@report_app.callback()
def report(
    ctx: typer.Context,
    period: Annotated[
        str | None, typer.Option(help="write the monthly cost report of this month, e.g. 2026-11")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="the report of this tenant only (default: all you see)")
    ] = None,
    file_format: Annotated[
        ReportFormat | None,
        typer.Option("--format", help="html (default, with a chart), pdf, or csv (exact figures)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="where to write it (default: tokenops-report-<period>[-<tenant>].<format>)"
        ),
    ] = None,
) -> None:
    """Unit economics from the running warehouse service (`tokenops warehouse` or `up`).

    `tokenops report --period 2026-11 [--tenant acme] [--format html|pdf|csv]` writes the
    monthly cost report, with the dashboard's numbers, for finance to send on."""
    monthly = any(option is not None for option in (period, tenant, file_format, out))
    if ctx.invoked_subcommand is not None:
        if monthly:
            raise typer.BadParameter(
                "--period, --tenant, --format and --out before a subcommand make the monthly "
                "report; put a subcommand's options after its name "
                f"(tokenops report {ctx.invoked_subcommand} --help)"
            )
        return
    if not monthly:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if period is None:
        raise typer.BadParameter("the monthly report needs a month", param_hint="--period")
    try:
        write_monthly_report(period, tenant, file_format or ReportFormat.html, out)
    except TokenopsError as exc:  # a group callback is not wrapped like the commands
        typer.echo(f"tokenops: {exc}", err=True)
        raise typer.Exit(2) from None


def write_monthly_report(
    period: str, tenant: str | None, file_format: ReportFormat, out: Path | None
) -> None:
    """Fetch the monthly report file from the warehouse service and write it."""
    from warehouse.monthly_report import file_name, month_bounds

    try:  # refused here, whether the service runs or not
        first, _ = month_bounds(period)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--period") from None
    month, fmt = f"{first:%Y-%m}", file_format.value
    response = warehouse_get(
        get_settings(),
        "/api/reports/monthly",
        {"period": month, "tenant": tenant, "format": fmt},
    )
    path = out or Path(file_name(month, tenant, fmt))
    try:
        path.write_bytes(response.content)
    except OSError as exc:
        raise TokenopsError(f"cannot write {path}: {exc.strerror}") from None
    spend = response.headers.get("x-report-spend-usd", "?")
    who = f"tenant {tenant}" if tenant is not None else "all tenants"
    typer.echo(f"{path}: cost report {month}, {who}: spend {spend} USD")


@report_app.command()
def costs(
    by: Annotated[
        str, typer.Option(help="comma-separated: tenant, feature, prompt_version, model, ...")
    ] = "tenant",
    start: Start = None,
    end: End = None,
    tenant: Tenant = None,
    feature: Annotated[str | None, typer.Option(help="only this feature")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cost per request, successful request and 1,000 tokens; error, fallback, cache savings."""
    data = _get(
        "/api/unit-costs",
        {"group_by": by, "start": start, "end": end, "tenant": tenant, "feature": feature},
    )
    columns = [*_dimension_columns(data["group_by"]), *UNIT_COST_COLUMNS]
    _print(data, as_json, render_table(columns, data["rows"]))


@report_app.command()
def margins(
    period: Annotated[
        str | None, typer.Option(help="2026-11, 2026-Q4 or 2026 (default: this month)")
    ] = None,
    tenant: Tenant = None,
    as_json: JsonOption = False,
) -> None:
    """Gross margin per tenant against revenue, least profitable first."""
    data = _get("/api/margins", {"period": period, "tenant": tenant})
    columns = [
        Column("tenant", "tenant"),
        Column("revenue_usd", "revenue $", "money"),
        Column("cost_usd", "cost $", "money"),
        Column("margin_usd", "margin $", "money"),
        Column("margin_pct", "margin", "pct"),
        Column("successful_requests", "ok requests", "count"),
        Column("cost_per_successful_request_usd", "$/ok request", "money"),
    ]
    total = {**data["total"], "tenant": "total"}
    text = f"{data['period']} ({data['start']} to {data['end']}, end excluded)\n"
    _print(data, as_json, text + render_table(columns, [*data["tenants"], total]))


@report_app.command()
def movers(
    by: Annotated[
        str, typer.Option(help="comma-separated: tenant, feature, model, ...")
    ] = "tenant",
    week: Annotated[
        str | None, typer.Option(help="ISO week, e.g. 2026-W47 (default: the last complete one)")
    ] = None,
    tenant: Tenant = None,
    limit: Annotated[int, typer.Option(help="show this many", min=1, max=1000)] = 10,
    as_json: JsonOption = False,
) -> None:
    """Week-over-week cost movers, largest absolute change first."""
    data = _get("/api/movers", {"group_by": by, "week": week, "tenant": tenant, "limit": limit})
    columns = [
        *_dimension_columns(data["group_by"]),
        Column("previous_cost_usd", "previous week $", "money"),
        Column("cost_usd", f"{data['week']} $", "money"),
        Column("delta_usd", "change $", "money"),
        Column("delta_pct", "change", "pct"),
    ]
    _print(data, as_json, render_table(columns, data["rows"]))


@report_app.command()
def prompts(
    feature: Annotated[str | None, typer.Option(help="only this feature")] = None,
    tenant: Tenant = None,
    start: Start = None,
    end: End = None,
    as_json: JsonOption = False,
) -> None:
    """Prompt versions side by side: cost, tokens and latency per request, error rate."""
    data = _get(
        "/api/prompt-versions",
        {"feature": feature, "tenant": tenant, "start": start, "end": end},
    )
    _print(data, as_json, side_by_side(data["rows"]))


PROMPT_METRICS = [
    Column("requests", "requests", "count"),
    Column("error_pct", "errors", "pct"),
    Column("cost_per_request_usd", "$/request", "money"),
    Column("cost_per_successful_request_usd", "$/ok request", "money"),
    Column("input_tokens_per_request", "input tokens/request", "number"),
    Column("output_tokens_per_request", "output tokens/request", "number"),
    Column("latency_p50_ms", "latency p50 ms", "count"),
    Column("latency_p95_ms", "latency p95 ms", "count"),
]


def side_by_side(rows: Sequence[dict[str, Any]]) -> str:
    """Per feature, one column per prompt version and one line per metric."""
    features: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        features.setdefault(row["feature"], []).append(row)
    blocks = []
    for feature, versions in features.items():
        columns = [Column("metric", f"feature {feature or '(none)'}")]
        columns += [
            Column(str(i), v["prompt_version"] or "(none)", "figure")
            for i, v in enumerate(versions)
        ]
        lines = [
            {"metric": m.header, **{str(i): cell(v[m.key], m.kind) for i, v in enumerate(versions)}}
            for m in PROMPT_METRICS
        ]
        blocks.append(render_table(columns, lines))
    return "\n\n".join(blocks) if blocks else "no calls"
