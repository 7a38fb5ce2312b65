"""The monthly report as documents to read and print: standalone HTML and PDF.

Both show the same tables, built once by `tables`: amounts (spend, revenue, margin) exact as the
API gives them, unit costs rounded to 6 decimal places for reading (the CSV has every digit),
percentages to 2. The daily spend chart is the one place numbers become floats: plotly and
reportlab draw with float coordinates. No printed figure is computed from a chart value.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from xml.sax.saxutils import escape

import plotly.graph_objects as go
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from warehouse.monthly_report import MonthlyReport

Kind = Literal["text", "figure", "count", "amount", "unit", "pct"]
"""text is left-aligned, the rest right-aligned. figure: already shown; amount: money shown
exactly (at least to the cent); unit: a money ratio, shown to 6 places."""
NOTHING = "\u2013"  # an en dash: no value (a ratio over 0)
_CENT = Decimal("0.01")
_UNIT = Decimal("0.000001")
_PCT = Decimal("0.01")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: Kind = "text"


@dataclass(frozen=True)
class ReportTable:
    title: str
    columns: Sequence[Column]
    rows: Sequence[dict[str, Any]]
    note: str = ""

    def cells(self) -> list[list[str]]:
        return [[shown(row.get(c.key), c.kind) for c in self.columns] for row in self.rows]


def shown(value: Any, kind: Kind) -> str:
    if value is None:
        return "(none)" if kind == "text" else NOTHING
    if kind == "count":
        return f"{value:,}"
    if kind == "amount":  # every digit, and at least cents
        amount = Decimal(value)
        return f"{amount:,.2f}" if amount == amount.quantize(_CENT) else f"{amount:,}"
    if kind == "unit":
        return f"{Decimal(value).quantize(_UNIT):,}"
    if kind == "pct":
        return f"{Decimal(value).quantize(_PCT)}%"
    return str(value)


UNIT_COSTS = [
    Column("requests", "requests", "count"),
    Column("successful_requests", "ok requests", "count"),
    Column("tokens", "tokens", "count"),
    Column("cost_usd", "cost $", "amount"),
    Column("cost_per_request_usd", "$/request", "unit"),
    Column("cost_per_successful_request_usd", "$/ok request", "unit"),
    Column("cost_per_1k_tokens_usd", "$/1k tokens", "unit"),
    Column("error_cost_usd", "errors $", "amount"),
    Column("fallback_cost_usd", "fallbacks $", "amount"),
    Column("cache_savings_usd", "cache saved $", "amount"),
]
HEADLINE: list[tuple[str, str, Kind]] = [
    ("Spend $", "cost_usd", "amount"),
    ("Requests", "requests", "count"),
    ("Successful requests", "successful_requests", "count"),
    ("Tokens", "tokens", "count"),
    ("Cost per request $", "cost_per_request_usd", "unit"),
    ("Cost per successful request $", "cost_per_successful_request_usd", "unit"),
    ("Cost per 1,000 tokens $", "cost_per_1k_tokens_usd", "unit"),
    ("Error cost $", "error_cost_usd", "amount"),
    ("Fallback cost $", "fallback_cost_usd", "amount"),
    ("Cache savings $", "cache_savings_usd", "amount"),
]
REVENUE: list[tuple[str, str, Kind]] = [
    ("Revenue $", "revenue_usd", "amount"),
    ("Gross margin $", "margin_usd", "amount"),
    ("Gross margin %", "margin_pct", "pct"),
]


def title(report: MonthlyReport) -> str:
    who = f"tenant {report.tenant}" if report.tenant is not None else "all tenants"
    return f"Cost report {report.start:%B %Y}, {who}"


def subtitle(report: MonthlyReport) -> str:
    return (
        f"{report.start.isoformat()} to {report.end.isoformat()} (excluded), UTC. "
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC by tokenops."
    )


def change_line(report: MonthlyReport) -> str:
    change = report.change
    pct = "" if change["cost_pct"] is None else f" ({shown(change['cost_pct'], 'pct')})"
    return (
        f"Spend changed by ${shown(change['cost_usd'], 'amount')}{pct} against "
        f"{report.previous['period']}; requests by {change['requests']:,}."
    )


def _utc_minute(moment: str) -> str:
    return f"{datetime.fromisoformat(moment).astimezone(UTC):%Y-%m-%d %H:%M}"


def tables(report: MonthlyReport) -> list[ReportTable]:
    """Every table of the report, in reading order; the headline first."""
    this, before = report.headline, report.previous
    headline = [
        {"metric": name, "this": shown(this[key], kind), "before": shown(before[key], kind)}
        for name, key, kind in HEADLINE
    ]
    headline += [
        {"metric": name, "this": shown(this[key], kind), "before": NOTHING}
        for name, key, kind in (REVENUE if report.has_revenue else [])
    ]
    found = [
        ReportTable(
            "Headline",
            [
                Column("metric", ""),
                Column("this", report.period, "figure"),
                Column("before", report.previous["period"], "figure"),
            ],
            headline,
            change_line(report),
        )
    ]
    if report.tenants:
        found.append(
            ReportTable(
                "Spend by tenant", [Column("tenant", "tenant"), *UNIT_COSTS], report.tenants
            )
        )
    if report.margins:
        found.append(
            ReportTable(
                "Gross margin by tenant",
                [
                    Column("tenant", "tenant"),
                    Column("revenue_usd", "revenue $", "amount"),
                    Column("plan_fee_usd", "plan fees $", "amount"),
                    Column("other_revenue_usd", "other revenue $", "amount"),
                    Column("cost_usd", "cost $", "amount"),
                    Column("margin_usd", "margin $", "amount"),
                    Column("margin_pct", "margin", "pct"),
                ],
                report.margins,
                "Revenue from the revenue file: plan fees, usage, credits.",
            )
        )
    found += [
        ReportTable(
            "Spend by feature", [Column("feature", "feature"), *UNIT_COSTS], report.features
        ),
        ReportTable(
            "Spend by model and provider",
            [Column("model", "model"), Column("provider", "provider"), *UNIT_COSTS],
            report.models,
            "Model: the model that served the request (after any fallback).",
        ),
        ReportTable(
            "Spend by prompt version",
            [
                Column("feature", "feature"),
                Column("prompt_version", "version"),
                Column("requests", "requests", "count"),
                Column("error_pct", "errors", "pct"),
                Column("cost_usd", "cost $", "amount"),
                Column("cost_per_request_usd", "$/request", "unit"),
                Column("cost_per_successful_request_usd", "$/ok request", "unit"),
                Column("latency_p50_ms", "p50 ms", "count"),
                Column("latency_p95_ms", "p95 ms", "count"),
            ],
            report.prompt_versions,
        ),
        ReportTable(
            "Alerts",
            [
                Column("created_at", "created (UTC)"),
                Column("kind", "kind"),
                Column("tenant", "tenant"),
                Column("state", "state"),
                Column("message", "message"),
            ],
            [{**a, "created_at": _utc_minute(a["created_at"])} for a in report.alerts],
            ", ".join(f"{kind}: {n}" for kind, n in report.alert_counts.items()),
        ),
        ReportTable(
            "Daily spend",
            [
                Column("day", "day"),
                Column("requests", "requests", "count"),
                Column("cost_usd", "cost $", "amount"),
            ],
            report.daily,
        ),
    ]
    return found


# --- HTML --------------------------------------------------------------------------------------

CSS = """
@page { size: A4 landscape; margin: 12mm; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1d2330; margin: 24px auto; max-width: 1200px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; break-after: avoid; }
p.sub, p.note { color: #5b6475; margin: 4px 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.narrow { width: auto; min-width: 420px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
th { text-align: left; background: #f3f5f8; font-weight: 600; }
th.num, td.num { text-align: right; white-space: nowrap; }
tr { break-inside: avoid; }
td.empty { color: #5b6475; font-style: italic; }
#daily-spend-chart { break-inside: avoid; }
"""


def _html_table(table: ReportTable) -> str:
    def align(column: Column) -> str:
        return "" if column.kind == "text" else ' class="num"'

    head = "".join(f"<th{align(c)}>{html.escape(c.header)}</th>" for c in table.columns)
    body = [
        "<tr>"
        + "".join(
            f"<td{align(c)}>{html.escape(value)}</td>"
            for c, value in zip(table.columns, line, strict=True)
        )
        + "</tr>"
        for line in table.cells()
    ] or [f'<tr><td class="empty" colspan="{len(table.columns)}">nothing this month</td></tr>']
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    narrow = ' class="narrow"' if len(table.columns) <= 3 else ""
    return (
        f"<h2>{html.escape(table.title)}</h2>{note}"
        f"<table{narrow}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def daily_chart(report: MonthlyReport) -> go.Figure:
    """Daily spend as bars; plotly encodes the Decimal amounts for drawing."""
    figure = go.Figure(
        go.Bar(
            x=[row["day"] for row in report.daily],
            y=[Decimal(row["cost_usd"]) for row in report.daily],
            marker_color="#3b6fd8",
            hovertemplate="%{x}: $%{y}<extra></extra>",
        )
    )
    figure.update_layout(
        height=300,
        margin={"l": 60, "r": 20, "t": 10, "b": 40},
        yaxis_title="spend $",
        xaxis={"type": "date", "tickformat": "%d %b"},
        plot_bgcolor="white",
    )
    return figure


def to_html(report: MonthlyReport) -> str:
    """A standalone, printable HTML file: inline CSS, the tables, and the daily spend chart with
    plotly.js inlined (a few MB), so it opens offline and can be mailed on as it is."""
    chart = daily_chart(report).to_html(
        full_html=False,
        include_plotlyjs=True,
        div_id="daily-spend-chart",
        config={"displayModeBar": False, "responsive": True},
    )
    headline, *rest = tables(report)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title(report))}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title(report))}</h1>",
            f'<p class="sub">{html.escape(subtitle(report))}</p>',
            _html_table(headline),
            "<h2>Daily spend</h2>",
            chart,
            *(_html_table(table) for table in rest),
            f'<p class="note">{html.escape(FOOTNOTE)}</p>',
            "</body></html>",
        ]
    )


FOOTNOTE = (
    "Cost is the effective cost of every metered request, price corrections included; failed "
    "and fallback attempts are real cost. Amounts are exact; unit costs are rounded to 6 "
    "decimal places (the CSV report has every digit)."
)


# --- PDF ---------------------------------------------------------------------------------------


def _pdf_table(table: ReportTable, small: ParagraphStyle, width: float) -> Table:
    header = [c.header for c in table.columns]
    cells: list[list[Any]] = [
        [
            Paragraph(escape(value), small) if c.key == "message" else value
            for c, value in zip(table.columns, line, strict=True)
        ]
        for line in table.cells()
    ]
    if not cells:
        cells = [["nothing this month", *([""] * (len(header) - 1))]]
    widths: list[float] | None = None
    if any(c.key == "message" for c in table.columns):
        fixed = [30 * mm] * (len(header) - 1)
        widths = [*fixed, width - sum(fixed)]
    style = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f5f8")),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#c9ced8")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        *(
            ("ALIGN", (i, 0), (i, -1), "RIGHT")
            for i, c in enumerate(table.columns)
            if c.kind != "text"
        ),
    ]
    return Table(
        [header, *cells], colWidths=widths, repeatRows=1, style=TableStyle(style), hAlign="LEFT"
    )


def _pdf_chart(report: MonthlyReport, width: float) -> Drawing:
    """Daily spend bars; the amounts become floats here, for drawing only."""
    values = [float(Decimal(row["cost_usd"])) for row in report.daily]
    drawing = Drawing(width, 150)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 45, 25, width - 55, 115
    chart.data = [values]
    chart.categoryAxis.categoryNames = [row["day"][-2:] for row in report.daily]
    chart.categoryAxis.labels.fontSize = 6
    chart.valueAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    if not any(values):
        chart.valueAxis.valueMax = 1
    chart.bars[0].fillColor = colors.HexColor("#3b6fd8")
    chart.bars[0].strokeColor = None
    drawing.add(chart)
    return drawing


def to_pdf(report: MonthlyReport, compress: bool = True) -> bytes:
    """The report as an A4 landscape PDF: the tables and a daily spend bar chart. `compress`
    off leaves page streams readable (for tests that look for text in the bytes)."""
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=title(report),
        author="tokenops",
        pageCompression=1 if compress else 0,
    )
    styles = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=styles["Normal"], fontSize=7.5, leading=9)
    width = document.width
    headline, *rest = tables(report)

    def section(table: ReportTable) -> list[Flowable]:
        flow: list[Flowable] = [Paragraph(escape(table.title), styles["Heading2"])]
        if table.note:
            flow.append(Paragraph(escape(table.note), small))
        return [*flow, Spacer(1, 2 * mm), _pdf_table(table, small, width)]

    story: list[Flowable] = [
        Paragraph(escape(title(report)), styles["Title"]),
        Paragraph(escape(subtitle(report)), styles["Normal"]),
        *section(headline),
        Paragraph("Daily spend", styles["Heading2"]),
        _pdf_chart(report, width),
    ]
    for table in rest:
        story += section(table)
    story += [Spacer(1, 4 * mm), Paragraph(escape(FOOTNOTE), small)]
    document.build(story)
    return buffer.getvalue()
