"""The dashboard in headless Chromium (Debian's package, driven by Playwright) against the whole
pipeline: the numbers on the page equal the query API's for the same filters, drill-down and
filters work, every table downloads as CSV, and a viewer of acme never sees globex. Screenshots
of each view, on a laptop and on a phone, are written to test-artifacts/dashboard/."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import Pipeline, running_pipeline
from tests.support import REPO, alert_event, publish_alerts

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
FINANCE = {"Authorization": "Bearer fin-demo-token"}
TRAFFIC = [
    # key, feature, prompt version, model, calls
    ("sk-acme-demo", "search", "v1", "gpt-4o-mini", 3),
    ("sk-acme-demo", "search", "v2", "gpt-4o-mini", 2),
    ("sk-acme-demo", "search", "v2", "gpt-4o", 1),
    ("sk-acme-demo", "support", "s1", "gpt-4o", 2),
    ("sk-globex-demo", "summarize", "g1", "claude-3-5-sonnet", 3),
]
CALLS = sum(t[4] for t in TRAFFIC)
DECOMPOSITION = {
    "volume": "0.0012",
    "errors": "0",
    "model_mix": "-0.0001",
    "tokens_per_request": {"input_uncached": "0.0042", "output": "0.0003"},
    "price": "0",
}


def anomaly(tenant: str, message: str) -> Any:
    return alert_event(
        tenant,
        kind="anomaly",
        state="WARN",
        scope={"tenant": tenant, "feature": "search"},
        period="60s",
        threshold=None,
        limit_usd=None,
        spend_usd=None,
        budget_id=None,
        created_at=datetime.now(UTC),
        message=message,
        explanation={"anomaly": "context_bloat", "decomposition": DECOMPOSITION},
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    budgets = [{"tenant": "acme", "period": "month", "limit_usd": "5", "thresholds": [0.5, 1.0]}]
    with running_pipeline(tmp_path_factory.mktemp("dashboard"), budgets) as pipeline:
        for key, feature, version, model, count in TRAFFIC:
            sdk = openai.OpenAI(
                base_url=f"{pipeline.relay}/v1",
                api_key=key,
                default_headers={"X-Feature": feature, "X-Prompt-Version": version},
            )
            for i in range(count):
                sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"{feature} {version} {i}"}]
                )
        publish_alerts(
            pipeline.env["TOKENOPS_KAFKA_BOOTSTRAP"],
            anomaly("acme", "acme search: context bloat, input tokens per request x3"),
            anomaly("globex", "globex summarize: spend spike"),
        )
        poll_api(pipeline, "/api/costs?group_by=", lambda b: b["rows"][0]["requests"] >= CALLS)
        poll_api(pipeline, "/api/alerts?kind=anomaly", lambda b: len(b["alerts"]) == 2)
        yield pipeline


def poll_api(pipeline: Pipeline, path: str, ready: Any) -> Any:
    client = httpx.Client(headers=FINANCE)
    deadline = datetime.now(UTC) + timedelta(seconds=120)
    body = None
    while datetime.now(UTC) < deadline:
        body = client.get(pipeline.api + path, timeout=10).json()
        if ready(body):
            return body
    raise AssertionError(f"{path} never became ready: {body}")


def api(pipeline: Pipeline, path: str, **params: str) -> Any:
    response = httpx.get(pipeline.api + path, params=params, headers=FINANCE, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make browser` (make test does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def logged_in(browser: Browser, pipeline: Pipeline, user: str, password: str, **kw: Any) -> Page:
    page = browser.new_context(accept_downloads=True, **kw).new_page()
    page.goto(pipeline.api + "/")
    assert "/login" in page.url  # the dashboard is not open to anyone
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(pipeline.api + "/**")
    wait_ready(page)
    return page


def wait_ready(page: Page, after: int = 0) -> None:
    page.wait_for_function(f"Number(document.body.dataset.ready || 0) > {after}", timeout=30_000)


def shown_rows(page: Page, table: str, columns: list[str]) -> list[tuple[str, ...]]:
    rows = []
    for tr in page.query_selector_all(f"table[data-table={table}] tbody tr"):
        cells = {
            td.get_attribute("data-column"): td.inner_text() for td in tr.query_selector_all("td")
        }
        rows.append(tuple(cells[c] for c in columns))
    return rows


def api_rows(rows: list[dict[str, Any]], columns: list[str]) -> list[tuple[str, ...]]:
    return [tuple("—" if r[c] is None else str(r[c]) for c in columns) for r in rows]


def month_params(**filters: str) -> dict[str, str]:
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return {"start": start.isoformat(), "end": end.isoformat(), **filters}


def test_overview_numbers_equal_the_query_api(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(
        browser, pipeline, "finance", "finance-demo", viewport={"width": 1366, "height": 900}
    )
    head = api(pipeline, "/api/overview")
    assert page.inner_text("#kpi-month") == "$" + head["month_to_date"]["cost_usd"]
    assert page.inner_text("#kpi-today") == "$" + head["today"]["cost_usd"]
    assert page.inner_text("#kpi-forecast") == "$" + head["forecast_month_usd"]
    assert page.inner_text("#kpi-requests") == str(CALLS)
    columns = ["tenant", "requests", "cost_usd"]
    tenants = api(pipeline, "/api/unit-costs", group_by="tenant", **month_params())["rows"]
    assert shown_rows(page, "top-tenants", columns) == api_rows(tenants, columns)
    assert {r[0] for r in shown_rows(page, "top-tenants", columns)} == {"acme", "globex"}
    page.wait_for_selector("#chart-trend .main-svg")  # Plotly drew the trend
    page.screenshot(path=str(ARTIFACTS / "overview-laptop.png"), full_page=True)

    with page.expect_download() as download:
        page.click("button[data-csv=top-tenants]")
    text = download.value.path().read_text()
    assert list(csv.DictReader(io.StringIO(text))) == [
        {c: str(r[c]) for c in columns} for r in tenants
    ]


def test_drill_down_from_tenant_to_model(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(browser, pipeline, "finance", "finance-demo")
    page.click("table[data-table=top-tenants] tr[data-key=acme]")
    page.wait_for_selector("#crumbs")
    wait_ready(page)
    levels = [
        ("feature", {"tenant": "acme"}, "search"),
        ("prompt_version", {"tenant": "acme", "feature": "search"}, "v2"),
    ]
    for dimension, filters, pick in levels:
        page.wait_for_function(
            "document.querySelector('table[data-table=breakdown] th')?.innerText !== undefined"
        )
        columns = [dimension, "requests", "cost_usd", "cost_per_request_usd"]
        expected = api(pipeline, "/api/unit-costs", group_by=dimension, **month_params(**filters))
        page.wait_for_function(
            "(n) => document.querySelectorAll('table[data-table=breakdown] tbody tr').length === n",
            arg=len(expected["rows"]),
        )
        assert shown_rows(page, "breakdown", columns) == api_rows(expected["rows"], columns)
        page.screenshot(path=str(ARTIFACTS / f"breakdown-{dimension}.png"), full_page=True)
        page.click(f"table[data-table=breakdown] tr[data-key='{pick}']")
        wait_ready(page)
    # The last level: models of acme / search / v2.
    both = api(
        pipeline,
        "/api/unit-costs",
        group_by="prompt_version,model",
        **month_params(tenant="acme", feature="search"),
    )["rows"]
    models = [r for r in both if r["prompt_version"] == "v2"]
    page.wait_for_function(
        "(n) => document.querySelectorAll('table[data-table=breakdown] tbody tr').length === n",
        arg=len(models),
    )
    columns = ["model", "requests", "cost_usd"]
    assert shown_rows(page, "breakdown", columns) == api_rows(models, columns)
    assert sorted(r[0] for r in shown_rows(page, "breakdown", columns)) == ["gpt-4o", "gpt-4o-mini"]
    assert "Prompt version: v2" in page.inner_text("#crumbs")


def test_filters_change_every_number(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(browser, pipeline, "finance", "finance-demo")
    before = int(page.evaluate("Number(document.body.dataset.ready)"))
    page.select_option("#f-tenant", "globex")
    wait_ready(page, before)
    assert "tenant=globex" in page.url
    head = api(pipeline, "/api/overview", tenant="globex")
    assert page.inner_text("#kpi-month") == "$" + head["month_to_date"]["cost_usd"]
    columns = ["model", "requests", "cost_usd"]
    models = api(pipeline, "/api/unit-costs", group_by="model", **month_params(tenant="globex"))
    assert shown_rows(page, "top-models", columns) == api_rows(models["rows"], columns)
    assert [r[0] for r in shown_rows(page, "top-models", columns)] == ["claude-3-5-sonnet-latest"]

    before = int(page.evaluate("Number(document.body.dataset.ready)"))
    page.select_option("#f-tenant", "")
    wait_ready(page, before)
    before = int(page.evaluate("Number(document.body.dataset.ready)"))
    page.select_option("#f-model", "gpt-4o")
    wait_ready(page, before)
    tenants = api(pipeline, "/api/unit-costs", group_by="tenant", **month_params(model="gpt-4o"))
    assert shown_rows(page, "top-tenants", ["tenant", "requests", "cost_usd"]) == api_rows(
        tenants["rows"], ["tenant", "requests", "cost_usd"]
    )


def test_every_view_renders_on_a_phone(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(
        browser, pipeline, "finance", "finance-demo", viewport={"width": 390, "height": 844}
    )
    for view in ("overview", "breakdown", "budgets", "anomalies", "prompts", "margins"):
        before = int(page.evaluate("Number(document.body.dataset.ready)"))
        page.click(f"#nav a[data-view={view}]")
        wait_ready(page, before)
        assert "could not load" not in page.inner_text("#status")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{view} is {width}px wide on a 390px phone"
        page.screenshot(path=str(ARTIFACTS / f"{view}-phone.png"), full_page=True)
    columns = ["feature", "prompt_version", "requests", "cost_per_request_usd"]
    page.click("#nav a[data-view=prompts]")
    versions = api(pipeline, "/api/prompt-versions", **month_params())["rows"]
    page.wait_for_selector("table[data-table=prompt-versions]")
    assert shown_rows(page, "prompt-versions", columns) == api_rows(versions, columns)


def test_an_anomaly_shows_its_explanation(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(browser, pipeline, "finance", "finance-demo")
    before = int(page.evaluate("Number(document.body.dataset.ready)"))
    page.click("#nav a[data-view=anomalies]")
    wait_ready(page, before)
    assert len(page.query_selector_all("table[data-table=anomalies] tbody tr")) == 2
    before = int(page.evaluate("Number(document.body.dataset.ready)"))
    page.click("table[data-table=anomalies] tbody tr:has-text('context bloat')")
    wait_ready(page, before)
    assert "acme" in page.inner_text("#card-explanation h2")
    assert shown_rows(page, "explanation", ["part", "change_usd"]) == [
        ("volume", "0.0012"),
        ("errors", "0"),
        ("model_mix", "-0.0001"),
        ("tokens_per_request / input_uncached", "0.0042"),
        ("tokens_per_request / output", "0.0003"),
        ("price", "0"),
    ]
    page.wait_for_selector("#chart-explanation .main-svg")
    page.screenshot(path=str(ARTIFACTS / "anomaly-explanation.png"), full_page=True)


def test_an_acme_viewer_never_sees_globex(browser: Browser, pipeline: Pipeline) -> None:
    page = logged_in(browser, pipeline, "acme-viewer", "acme-demo")
    options = page.eval_on_selector_all("#f-tenant option", "os => os.map(o => o.value)")
    assert options == ["", "acme"]
    for view in ("overview", "breakdown", "budgets", "anomalies", "prompts", "margins"):
        before = int(page.evaluate("Number(document.body.dataset.ready)"))
        page.click(f"#nav a[data-view={view}]")
        wait_ready(page, before)
        assert "globex" not in page.content(), view
    page.screenshot(path=str(ARTIFACTS / "acme-viewer-overview.png"), full_page=True)
    # Asking for globex in the URL does not show it either.
    page.goto(pipeline.api + "/?tenant=globex#overview")
    page.wait_for_function("document.getElementById('status').innerText !== 'loading…'")
    assert "summarize" not in page.content() and "claude" not in page.content()
