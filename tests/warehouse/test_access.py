"""Access control of the warehouse service, on the real app (`create_app`: every router it
mounts), a real DuckDB file and a private embedded broker (the loader and the budgets registry
run as in production).

The warehouse holds calls, alerts, webhook deliveries and price corrections of acme and globex
(and an organisation-wide alert). The demo access.yaml is used as shipped: `acme-viewer-token` /
the user acme-viewer see acme only, `fin-demo-token` / the user finance see every tenant.
Routes are enumerated from the app's OpenAPI schema (every route a router declares) and its own
routes, so a route added later is covered without editing this file (a new required parameter
must be given a value in REQUIRED_VALUES).
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from starlette.routing import Route
from typer.testing import CliRunner

from ingest.alert_delivery import AlertDelivery
from ingest.price_book import ClassRates, PriceBook, PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts
from tests.support import alert_event, free_port, usage_event, warehouse_api_on_loopback
from tokenops.broker import ensure_topics, start_embedded_broker
from tokenops.cli import app as cli
from tokenops.errors import ConfigError
from tokenops.settings import DEMO_CONFIG_DIR, Settings, get_settings
from warehouse.access import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    AccessBook,
    Sessions,
    Viewer,
    hash_password,
    session_secret,
)
from warehouse.service import create_app

FINANCE = {"Authorization": "Bearer fin-demo-token"}
ACME = {"Authorization": "Bearer acme-viewer-token"}
NOW = datetime.now(UTC).replace(microsecond=0)
FIRST = NOW - timedelta(hours=1)
MONTH = f"{FIRST:%Y-%m}"
PUBLIC = {"/healthz", "/login", "/logout"}
"""Open to anyone: health, and the login form itself. `/` redirects; /static/ is assets."""
ADMIN_ONLY = {"/api/ingest/conservation", "/api/quarantine", "/api/ingest/totals", "/api/status"}
REQUIRED_VALUES = {"period": MONTH, "budget_id": "acme-month"}
"""A valid value for each required query or path parameter of any route."""


# --- the warehouse -----------------------------------------------------------------------------


def calls() -> list[Any]:
    """Priced calls: acme's search and globex's own feature, now, a week and two weeks ago."""
    made = []
    for days in (0, 7, 14):
        at = FIRST - timedelta(days=days)
        for tenant, feature, version in (
            ("acme", "search", "v1"),
            ("globex", "globex-chat", "globex-v1"),
        ):
            made.append(
                usage_event(
                    TokenCounts(input_uncached=1000, output=200),
                    event_time=at,
                    tenant=tenant,
                    feature=feature,
                    prompt_version=version,
                    latency_ms=120,
                )
            )
    return made


def contract(tenant: str) -> PriceVersion:
    return PriceVersion(
        provider="openai",
        model="gpt-4o-mini",
        tenant=tenant,
        effective_from="2020-01-01",
        source=f"{tenant} agreement",
        per_million=ClassRates(input=Decimal("0.1"), output=Decimal("0.4")),
    )


def fill(app: FastAPI) -> None:
    store = app.state.store
    pricer = Pricer(PriceBook())
    alerts = [alert_event("acme"), alert_event("globex"), alert_event("*", scope={})]
    deliveries = [
        AlertDelivery(
            delivery_id=f"d-{alert.alert_id}",
            alert_id=alert.alert_id,
            webhook=f"{alert.tenant}-hook",
            tenant=alert.tenant,
            attempt=1,
            status="delivered",
            http_status=200,
            delivered_at=NOW,
            latency_ms=10,
        )
        for alert in alerts
    ]
    store.load([pricer.price_event(c) for c in calls()], alerts, [], deliveries)
    for tenant in ("acme", "globex"):  # corrections for both
        version = contract(tenant)
        pricer.book.add(version)
        assert store.apply_price_version(version, pricer) == 3


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A broker of this module's own: the warehouse's consumer group is not shared."""
    port = free_port()
    process = start_embedded_broker(port)
    try:
        ensure_topics(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def app(broker: str, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    data = tmp_path_factory.mktemp("access")
    settings = Settings(
        kafka_bootstrap=broker,
        config_dir=DEMO_CONFIG_DIR,
        data_dir=data,
        snapshot_interval_s=0,
        session_secret=None,
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    """The service with its lifespan (loader, budgets registry) running."""
    with TestClient(app) as running:
        fill(app)
        yield running


def browser(app: FastAPI) -> TestClient:
    """A client with its own cookie jar (GETs and logins only: the budgets registry's producer
    lives in the module client's event loop)."""
    return TestClient(app, follow_redirects=False)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    parameters: tuple[dict[str, Any], ...] = ()

    @property
    def path(self) -> str:
        return re.sub(r"{(\w+)}", lambda m: REQUIRED_VALUES[m[1]], self.template)

    def takes(self, name: str) -> bool:
        return any(p["name"] == name and p["in"] == "query" for p in self.parameters)

    def params(self, **extra: str) -> dict[str, str]:
        """Valid values for the required query parameters, and those of `extra` it takes."""
        found = {}
        for param in self.parameters:
            if param["in"] == "query" and param.get("required"):
                name = param["name"]
                assert name in REQUIRED_VALUES, f"{self.template}: give {name} a value"
                found[name] = REQUIRED_VALUES[name]
        return found | {k: v for k, v in extra.items() if self.takes(k)}


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every route: those in the OpenAPI schema (all the routers') and the app's own."""
    found = [
        Endpoint(method.upper(), path, tuple(operation.get("parameters", ())))
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    ]
    for route in app.routes:
        if isinstance(route, Route):
            found += [Endpoint(m, route.path) for m in route.methods or () if m != "HEAD"]
    unique = list({(e.method, e.template): e for e in found}.values())
    assert len(unique) > 20, unique
    return unique


def api_gets(app: FastAPI) -> list[Endpoint]:
    return [e for e in endpoints(app) if e.method == "GET" and e.template.startswith("/api/")]


# --- who gets in -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-acme-demo"},  # a relay key opens the relay only
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic ZmluYW5jZTpmaW5hbmNlLWRlbW8="},  # finance:finance-demo
        {"Authorization": "Bearer "},
        {"Cookie": f"{SESSION_COOKIE}=forged.value.here"},
    ],
    ids=["none", "relay-key", "unknown", "basic", "empty", "forged-cookie"],
)
def test_every_route_but_health_and_login_refuses_a_stranger(
    client: TestClient, app: FastAPI, headers: dict[str, str]
) -> None:
    for endpoint in endpoints(app):
        method, path = endpoint.method, endpoint.path
        if path in PUBLIC or path.startswith("/static/"):
            continue
        response = client.request(method, path, headers=headers, follow_redirects=False)
        if path == "/":
            assert response.status_code == 303, (method, path)
            assert response.headers["location"] == "/login?next=/"
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "log in at /login" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_api_docs_need_a_viewer(client: TestClient) -> None:
    assert client.get("/api/docs").status_code == 401
    assert client.get("/api/openapi.json").status_code == 401
    schema = client.get("/api/openapi.json", headers=ACME).json()
    assert "/api/costs" in schema["paths"]
    assert client.get("/api/docs", headers=ACME).status_code == 200


# --- what each viewer sees ---------------------------------------------------------------------


def test_an_acme_viewer_never_gets_globex_from_any_api_route(
    client: TestClient, app: FastAPI
) -> None:
    seen_acme = []
    for route in api_gets(app):
        for extra in ({}, {"tenant": "acme"}):
            params = route.params(**extra)
            response = client.get(route.path, params=params, headers=ACME)
            if route.template in ADMIN_ONLY:
                assert response.status_code == 403, route.template
                continue
            assert response.status_code == 200, (route.template, params, response.text)
            assert b"globex" not in response.content.lower(), (route.template, params)
            seen_acme.append(b"acme" in response.content)
        if route.takes("tenant"):
            refused = client.get(route.path, params=route.params(tenant="globex"), headers=ACME)
            assert refused.status_code == 403, route.template
            assert refused.json()["detail"] == "acme-viewer-api may not see tenant globex"
    assert sum(seen_acme) >= 8  # not vacuous: acme's own data is there


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/costs", {"group_by": "tenant,feature,prompt_version,model,provider,day"}),
        ("/api/costs", {"group_by": "model", "model": "gpt-4o-mini"}),
        ("/api/unit-costs", {"group_by": "tenant,feature,prompt_version,model,provider,day"}),
        ("/api/unit-costs", {"group_by": "", "model": "gpt-4o-mini"}),
        ("/api/movers", {"group_by": "tenant,feature,prompt_version,model"}),
        ("/api/prompt-versions", {}),
        ("/api/margins", {"period": MONTH}),
        ("/api/alerts", {"kind": "budget"}),
        ("/api/alert-deliveries", {}),
        ("/api/corrections", {}),
        ("/api/budgets", {}),
        ("/api/export/focus", {"period": MONTH, "format": "csv"}),
    ],
)
def test_filters_and_groupings_stay_inside_acme(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    acme = client.get(path, params=params, headers=ACME)
    assert acme.status_code == 200, acme.text
    assert b"globex" not in acme.content.lower()
    finance = client.get(path, params=params, headers=FINANCE)
    assert finance.status_code == 200, finance.text


def test_naming_globex_data_in_a_filter_finds_nothing(client: TestClient) -> None:
    for path, params, rows in (
        ("/api/costs", {"group_by": "tenant", "feature": "globex-chat"}, "rows"),
        ("/api/unit-costs", {"group_by": "", "feature": "globex-chat"}, "rows"),
        ("/api/prompt-versions", {"feature": "globex-chat"}, "rows"),
        ("/api/alert-deliveries", {"webhook": "globex-hook"}, "deliveries"),
    ):
        found = client.get(path, params=params, headers=ACME).json()[rows]
        # nothing, or the one row of totals over nothing
        assert found == [] or [r["requests"] for r in found] == [0], (path, found)
        assert client.get(path, params=params, headers=FINANCE).json()[rows] != found


def test_the_focus_csv_of_an_acme_viewer_is_acme_and_adds_up(client: TestClient) -> None:
    def export(headers: dict[str, str], **params: str) -> tuple[list[dict[str, str]], Decimal]:
        response = client.get(
            "/api/export/focus", params={"period": MONTH, **params}, headers=headers
        )
        assert response.status_code == 200, response.text
        rows = list(csv.DictReader(io.StringIO(response.text)))
        total = Decimal(response.headers["x-tokenops-billed-cost-usd"])
        assert sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0)) == total
        return rows, total

    acme_rows, acme_total = export(ACME)
    assert acme_rows and {r["SubAccountId"] for r in acme_rows} == {"acme"}
    assert any(r["ChargeClass"] == "Correction" for r in acme_rows)
    every_row, every_total = export(FINANCE)
    assert {r["SubAccountId"] for r in every_row} == {"acme", "globex"}
    assert export(FINANCE, tenant="acme") == (acme_rows, acme_total)
    assert acme_total < every_total
    refused = client.get(
        "/api/export/focus", params={"period": MONTH, "tenant": "globex"}, headers=ACME
    )
    assert refused.status_code == 403


def test_finance_sees_every_tenant_and_the_ingest_records(client: TestClient) -> None:
    costs = client.get("/api/costs", headers=FINANCE).json()["rows"]
    assert {r["tenant"] for r in costs} == {"acme", "globex"}
    acme = client.get("/api/costs", headers=ACME).json()["rows"]
    assert [r["tenant"] for r in acme] == ["acme"]
    assert acme == [r for r in costs if r["tenant"] == "acme"]
    alerts = client.get("/api/alerts", headers=FINANCE).json()["alerts"]
    assert {a["tenant"] for a in alerts} == {"acme", "globex", "*"}
    assert [a["tenant"] for a in client.get("/api/alerts", headers=ACME).json()["alerts"]] == [
        "acme"
    ]
    assert client.get("/api/ingest/totals", headers=FINANCE).json()["calls"] == 6
    assert client.get("/api/status", headers=FINANCE).status_code == 200
    assert client.post("/api/snapshots", headers=ACME).status_code == 403


def test_model_and_feature_filters(client: TestClient) -> None:
    by_feature = client.get(
        "/api/costs", params={"group_by": "tenant", "feature": "search"}, headers=FINANCE
    ).json()["rows"]
    assert [(r["tenant"], r["requests"]) for r in by_feature] == [("acme", 3)]
    none = client.get(
        "/api/unit-costs", params={"group_by": "tenant", "model": "gpt-4o"}, headers=FINANCE
    ).json()["rows"]
    assert none == []
    served = client.get(
        "/api/unit-costs", params={"group_by": "tenant", "model": "gpt-4o-mini"}, headers=ACME
    ).json()["rows"]
    assert [(r["tenant"], r["requests"]) for r in served] == [("acme", 3)]


# --- budgets -----------------------------------------------------------------------------------


def test_budgets_are_seen_and_written_only_inside_the_viewers_tenants(client: TestClient) -> None:
    listed = {b["id"] for b in client.get("/api/budgets", headers=ACME).json()["budgets"]}
    assert listed == {"acme-month", "acme-search-week"}
    everything = {b["id"] for b in client.get("/api/budgets", headers=FINANCE).json()["budgets"]}
    assert {"org-month", "globex-month"} <= everything
    assert client.get("/api/budgets", params={"tenant": "globex"}, headers=ACME).status_code == 403
    for hidden in ("globex-month", "org-month"):
        assert client.get(f"/api/budgets/{hidden}", headers=ACME).status_code == 404
        assert client.delete(f"/api/budgets/{hidden}", headers=ACME).status_code == 404
        body = {"scope": {}, "period": "month", "limit_usd": "1"}
        assert client.put(f"/api/budgets/{hidden}", json=body, headers=ACME).status_code == 404

    month = {"period": "month", "limit_usd": "5"}
    for scope in ({"tenant": "globex"}, {}, {"feature": "search"}):
        refused = client.post("/api/budgets", json={"scope": scope, **month}, headers=ACME)
        assert refused.status_code == 403, (scope, refused.text)
    mine = client.post("/api/budgets", json={"scope": {"tenant": "acme"}, **month}, headers=ACME)
    assert mine.status_code == 201, mine.text
    budget_id = mine.json()["id"]
    moved = client.put(
        f"/api/budgets/{budget_id}", json={"scope": {"tenant": "globex"}, **month}, headers=ACME
    )
    assert moved.status_code == 403
    assert client.get(f"/api/budgets/{budget_id}", headers=ACME).json()["scope"] == {
        "tenant": "acme"
    }
    assert client.delete(f"/api/budgets/{budget_id}", headers=ACME).status_code == 204

    org = client.post("/api/budgets", json={"scope": {}, **month}, headers=FINANCE)
    assert org.status_code == 201, org.text
    assert client.delete(f"/api/budgets/{org.json()['id']}", headers=FINANCE).status_code == 204
    assert client.get("/api/budgets/globex-month", headers=FINANCE).status_code == 200


# --- logging in --------------------------------------------------------------------------------


def test_a_wrong_password_shows_the_form_again(client: TestClient, app: FastAPI) -> None:
    web = browser(app)
    form = web.get("/login", params={"next": "/"})
    assert form.status_code == 200
    assert 'name="username"' in form.text and 'name="password"' in form.text
    for user, password in (("acme-viewer", "finance-demo"), ("nobody", "acme-demo")):
        failed = web.post("/login", data={"username": user, "password": password, "next": "/"})
        assert failed.status_code == 401
        assert "Wrong user name or password." in failed.text
        assert SESSION_COOKIE not in failed.headers.get("set-cookie", "")
    assert web.get("/api/costs").status_code == 401


def test_a_session_opens_the_dashboard_and_the_api_until_logout(
    client: TestClient, app: FastAPI
) -> None:
    web = browser(app)
    assert web.get("/").headers["location"] == "/login?next=/"
    logged_in = web.post(
        "/login",
        data={"username": "acme-viewer", "password": "acme-demo", "next": "/?month=2026-11"},
    )
    assert logged_in.status_code == 303
    assert logged_in.headers["location"] == "/?month=2026-11"
    cookie = logged_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert f"max-age={SESSION_MAX_AGE_S}" in cookie

    page = web.get("/")
    assert page.status_code == 200 and "<html" in page.text
    costs = web.get("/api/costs", params={"group_by": "tenant,feature"})
    assert costs.status_code == 200
    assert {r["tenant"] for r in costs.json()["rows"]} == {"acme"}
    assert web.get("/api/costs", params={"tenant": "globex"}).status_code == 403
    assert web.get("/login", params={"next": "/"}).status_code == 303  # already in

    out = web.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert web.get("/api/costs").status_code == 401
    assert web.get("/").status_code == 303


def test_finance_logs_in_to_every_tenant(client: TestClient, app: FastAPI) -> None:
    web = browser(app)
    web.post("/login", data={"username": "finance", "password": "finance-demo"})
    rows = web.get("/api/costs").json()["rows"]
    assert {r["tenant"] for r in rows} == {"acme", "globex"}


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", ""],
)
def test_login_never_redirects_off_site(client: TestClient, app: FastAPI, target: str) -> None:
    response = browser(app).post(
        "/login", data={"username": "acme-viewer", "password": "acme-demo", "next": target}
    )
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_tampered_or_expired_session_is_refused(
    client: TestClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = browser(app)
    web.post("/login", data={"username": "acme-viewer", "password": "acme-demo"})
    value = web.cookies[SESSION_COOKIE]
    assert web.get("/api/costs").status_code == 200

    tampered = browser(app)
    tampered.cookies.set(SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert tampered.get("/api/costs").status_code == 401

    issued = int(time.time()) - SESSION_MAX_AGE_S - 60
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: issued)
    old = Sessions(session_secret(app.state.settings))._serializer.dumps(
        {"user": "acme-viewer", "pw": app.state.access.fingerprint("acme-viewer")}
    )
    monkeypatch.undo()
    expired = browser(app)
    expired.cookies.set(SESSION_COOKIE, old)
    assert expired.get("/api/costs").status_code == 401


# --- access.yaml, secrets and the CLI ----------------------------------------------------------


def test_a_changed_password_or_a_removed_user_ends_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    first = hash_password("first-password")
    path.write_text(f"users: [{{name: ann, password_hash: '{first}', tenants: [acme]}}]\n")
    book = AccessBook.load(path)
    assert book.login("ann", "first-password") == Viewer("ann", frozenset({"acme"}))
    fingerprint = book.fingerprint("ann")
    assert book.user_viewer("ann", fingerprint) is not None
    second = hash_password("second-password")
    path.write_text(f"users: [{{name: ann, password_hash: '{second}', tenants: all}}]\n")
    assert AccessBook.load(path).user_viewer("ann", fingerprint) is None
    path.write_text("users: []\n")
    assert AccessBook.load(path).user_viewer("ann", fingerprint) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("users: [{name: a, password: secret, tenants: all}]", "password"),
        ("users: [{name: a, password_hash: secret, tenants: all}]", "tokenops access hash-p"),
        ("tokens: [{name: t, sha256: abc, tenants: all}]", "sha256"),
        ("tokens: [{name: t, sha256: '" + "a" * 64 + "', tenants: some}]", "tenants"),
        ("tokens: [{name: t, sha256: '" + "a" * 64 + "', tenants: ['a b']}]", "tenants"),
        (
            "tokens: [{name: t, sha256: '"
            + "a" * 64
            + "', tenants: all}, {name: t, sha256: '"
            + "b" * 64
            + "', tenants: all}]",
            "names used twice",
        ),
        ("users: [", "invalid access file"),
    ],
)
def test_a_bad_access_file_is_one_clear_error(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid access file") as error:
        AccessBook.load(path)
    assert reason in str(error.value)


def test_without_access_yaml_nobody_gets_in(
    tmp_path: Path, client: TestClient, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        book = AccessBook.load(tmp_path / "access.yaml")
    assert not book.configured and "refuse every request" in caplog.text
    assert book.login("finance", "finance-demo") is None
    configured = app.state.access
    app.state.access = book
    try:
        refused = client.get("/api/costs", headers=FINANCE)
        assert refused.status_code == 401 and "not configured" in refused.json()["detail"]
        assert client.get("/healthz").status_code == 200
    finally:
        app.state.access = configured


def test_the_session_secret_is_kept_in_the_data_dir_or_taken_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, session_secret=None)
    secret = session_secret(settings)
    key = tmp_path / "session.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert session_secret(settings) == secret and len(secret) == 64
    given = "x" * 40
    assert session_secret(Settings(data_dir=tmp_path, session_secret=given)) == given
    monkeypatch.setenv("TOKENOPS_SESSION_SECRET", "short")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="TOKENOPS_SESSION_SECRET"):
            get_settings()
    finally:
        get_settings.cache_clear()


@pytest.fixture
def service(app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The same app on a loopback port, where the CLI looks for it."""
    for name in [k for k in os.environ if k.startswith("TOKENOPS_")]:
        monkeypatch.delenv(name)
    with warehouse_api_on_loopback(app, monkeypatch):
        yield


def test_the_cli_sends_its_token_and_says_when_it_needs_one(
    service: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    out = tmp_path / "focus.csv"
    command = ["export", "focus", "--period", MONTH, "--out", str(out)]
    missing = runner.invoke(cli, command)
    assert missing.exit_code == 2
    assert "set TOKENOPS_API_TOKEN" in missing.stderr and "HTTP 401" in missing.stderr

    monkeypatch.setenv("TOKENOPS_API_TOKEN", "sk-acme-demo")
    get_settings.cache_clear()
    refused = runner.invoke(cli, command)
    assert refused.exit_code == 2 and "was refused (HTTP 401)" in refused.stderr

    monkeypatch.setenv("TOKENOPS_API_TOKEN", "acme-viewer-token")
    get_settings.cache_clear()
    exported = runner.invoke(cli, command)
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    assert rows and {r["SubAccountId"] for r in rows} == {"acme"}
    totals = runner.invoke(cli, ["report", "costs", "--by", "tenant", "--json"])
    assert totals.exit_code == 0, totals.output
    assert "globex" not in totals.stdout and "acme" in totals.stdout


def test_delivery_rows_stay_inside_the_scope_without_an_alert_id(client: TestClient) -> None:
    rows = client.get("/api/alert-deliveries", headers=ACME).json()["deliveries"]
    assert [r["webhook"] for r in rows] == ["acme-hook"]
    every = client.get("/api/alert-deliveries", headers=FINANCE).json()["deliveries"]
    assert {r["webhook"] for r in every} == {"acme-hook", "globex-hook", "*-hook"}
