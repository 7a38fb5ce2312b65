// The tokenops dashboard: every number comes from the query API for the filters in the URL, and
// money stays the API's decimal string end to end (never parsed into a float for display).
"use strict";

const LABELS = {
  tenant: "Tenant", feature: "Feature", prompt_version: "Prompt version", model: "Model",
  provider: "Provider", day: "Day", requests: "Requests", successful_requests: "Successful",
  failed_requests: "Failed", tokens: "Tokens", input_tokens: "Input tokens",
  output_tokens: "Output tokens", cost_usd: "Cost (USD)", cost_per_request_usd: "Per request",
  cost_per_successful_request_usd: "Per successful request",
  cost_per_1k_tokens_usd: "Per 1k tokens", error_cost_usd: "Error cost",
  fallback_cost_usd: "Fallback cost", cache_savings_usd: "Cache savings",
  revenue_usd: "Revenue", margin_usd: "Margin", margin_pct: "Margin %",
  error_pct: "Errors %", input_tokens_per_request: "Input tok/req",
  output_tokens_per_request: "Output tok/req", latency_p50_ms: "p50 ms", latency_p95_ms: "p95 ms",
  created_at: "When", state: "State", kind: "Kind", period: "Period", message: "Message",
  scope: "Scope", limit: "Limit", used: "Used", used_pct: "Used %", forecast_pct: "Forecast %",
  measure: "Measure", hard: "Hard", id: "Id", part: "Part", change_usd: "Change (USD)",
};
const TEXT_COLUMNS = new Set(["tenant", "feature", "prompt_version", "model", "provider", "day",
  "created_at", "state", "kind", "period", "message", "scope", "measure", "hard", "id", "part"]);
const DRILL = ["tenant", "feature", "prompt_version", "model"];
const COST_COLUMNS = ["requests", "successful_requests", "tokens", "cost_usd", "cost_per_request_usd",
  "cost_per_successful_request_usd", "cost_per_1k_tokens_usd", "error_cost_usd",
  "fallback_cost_usd", "cache_savings_usd"];

// ---- state in the URL: filters in the query string, the view (and drill path) in the hash ----

function readState() {
  const q = new URLSearchParams(location.search);
  const now = new Date();
  const month = q.get("month") || `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  const [view, ...path] = (location.hash.slice(1) || "overview").split("/");
  return {
    month, tenant: q.get("tenant") || "", feature: q.get("feature") || "", model: q.get("model") || "",
    view, path: path.map(decodeURIComponent),
  };
}

function go(state) {
  const q = new URLSearchParams();
  for (const key of ["month", "tenant", "feature", "model"]) if (state[key]) q.set(key, state[key]);
  const hash = "#" + [state.view, ...(state.path || []).map(encodeURIComponent)].join("/");
  history.pushState(null, "", "?" + q.toString() + hash);
  render();
}

function monthRange(month) {
  const [y, m] = month.split("-").map(Number);
  const start = new Date(Date.UTC(y, m - 1, 1));
  const end = new Date(Date.UTC(y, m, 1));
  return { start: start.toISOString(), end: end.toISOString() };
}

// ---- the query API ----

async function api(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const url = path + (q.toString() ? "?" + q.toString() : "");
  const response = await fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin" });
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search + location.hash);
    throw new Error("not logged in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${detail}`);
  }
  return response.json();
}

function costParams(state, extra = {}) {
  const range = monthRange(state.month);
  return { start: range.start, end: range.end, tenant: state.tenant, feature: state.feature,
    model: state.model, ...extra };
}

// ---- building blocks ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function shown(column, value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function csvText(columns, rows) {
  const quote = (v) => {
    const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.join(","), ...rows.map((r) => columns.map((c) => quote(r[c])).join(","))].join("\n") + "\n";
}

function download(name, columns, rows) {
  const blob = new Blob([csvText(columns, rows)], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: name + ".csv" });
  document.body.append(link);
  link.click();
  link.remove();
}

function table(name, columns, rows, onRow) {
  if (!rows.length) return el("p", { class: "empty", "data-table": name }, "Nothing for these filters.");
  const head = el("tr", {}, ...columns.map((c) => el("th", { class: TEXT_COLUMNS.has(c) ? "" : "num" }, LABELS[c] || c)));
  const body = rows.map((row) => {
    const tr = el("tr", { "data-key": columns.filter((c) => TEXT_COLUMNS.has(c)).map((c) => shown(c, row[c])).join("|") },
      ...columns.map((c) => el("td", { class: (TEXT_COLUMNS.has(c) ? "" : "num") + (c === "state" ? ` state-${row[c]}` : ""), "data-column": c }, shown(c, row[c]))));
    if (onRow) { tr.className = "drill"; tr.addEventListener("click", () => onRow(row)); }
    return tr;
  });
  return el("table", { "data-table": name }, el("thead", {}, head), el("tbody", {}, ...body));
}

function card(title, name, columns, rows, { wide = false, onRow = null, before = null } = {}) {
  const tools = el("span", { class: "tools" },
    el("button", { type: "button", "data-csv": name, onclick: () => download(name, columns, rows) }, "CSV"));
  return el("section", { class: wide ? "wide" : "", id: "card-" + name },
    el("h2", {}, title, tools), before, table(name, columns, rows, onRow));
}

function chart(id, traces, layout, wide = true) {
  const div = el("div", { class: "chart", id });
  const section = el("section", { class: wide ? "wide" : "" }, div);
  requestAnimationFrame(() => Plotly.react(div, traces, {
    margin: { t: 30, r: 10, b: 40, l: 60 }, autosize: true, legend: { orientation: "h" }, ...layout,
  }, { responsive: true, displayModeBar: false }));
  return section;
}

// Plotly draws numbers: the chart is the only place a decimal string becomes a JS number.
const plotted = (value) => Number(value);

function kpi(id, label, value) {
  return el("div", { class: "kpi" }, el("div", { class: "value", id }, value), el("div", { class: "label" }, label));
}

// ---- views ----

async function overview(state) {
  const [head, tenants, features, models, days, budgets] = await Promise.all([
    api("/api/overview", { month: state.month, tenant: state.tenant, feature: state.feature, model: state.model }),
    api("/api/unit-costs", costParams(state, { group_by: "tenant" })),
    api("/api/unit-costs", costParams(state, { group_by: "feature" })),
    api("/api/unit-costs", costParams(state, { group_by: "model" })),
    api("/api/unit-costs", costParams(state, { group_by: "day" })),
    api("/api/budgets", { tenant: state.tenant }),
  ]);
  const kpis = el("section", { class: "wide kpis" },
    kpi("kpi-today", "Spend today (USD)", head.today ? "$" + head.today.cost_usd : "—"),
    kpi("kpi-month", "Month to date (USD)", "$" + head.month_to_date.cost_usd),
    kpi("kpi-forecast", head.month_complete ? "Month total (USD)" : "Forecast to month end (USD)", "$" + head.forecast_month_usd),
    kpi("kpi-requests", "Requests this month", String(head.month_to_date.requests)));
  const spent = Object.fromEntries(days.rows.map((r) => [r.day, r.cost_usd]));
  const range = monthRange(state.month);
  const monthDays = [];
  for (let d = new Date(range.start); d < new Date(range.end); d.setUTCDate(d.getUTCDate() + 1)) {
    monthDays.push(d.toISOString().slice(0, 10));
  }
  const trend = chart("chart-trend", [{
    type: "bar", x: monthDays, y: monthDays.map((d) => plotted(spent[d] || "0")), name: "cost (USD)",
  }], { title: { text: "Daily spend (USD)" }, xaxis: { type: "category", tickangle: -45 } });
  const drillTo = (dimension) => (row) => go({ ...state, view: "breakdown", path: dimension === "tenant" ? [row.tenant] : [] });
  return [
    kpis,
    card("Budgets this period", "budgets-status", ["id", "scope", "period", "measure", "used", "limit", "used_pct", "forecast_pct", "hard"], budgetRows(budgets.budgets), { wide: true }),
    trend,
    card("Top tenants", "top-tenants", ["tenant", "requests", "cost_usd"], tenants.rows.slice(0, 10), { onRow: drillTo("tenant") }),
    card("Top features", "top-features", ["feature", "requests", "cost_usd"], features.rows.slice(0, 10)),
    card("Top models", "top-models", ["model", "requests", "cost_usd"], models.rows.slice(0, 10)),
  ];
}

function budgetRows(budgets) {
  const rows = [];
  for (const b of budgets) {
    for (const [measure, m] of Object.entries(b.current_period.measures)) {
      rows.push({ id: b.id, scope: Object.entries(b.scope).map(([k, v]) => `${k}=${v}`).join(" ") || "organisation",
        period: b.period, measure, used: m.used, limit: m.limit, used_pct: m.used_pct,
        forecast_pct: m.forecast_pct, hard: b.hard ? "yes" : "no" });
    }
  }
  return rows;
}

async function breakdown(state) {
  // The drill path picks tenant -> feature -> prompt version -> model; filters still apply.
  const level = Math.min(state.path.length, DRILL.length - 1);
  const fixed = Object.fromEntries(state.path.slice(0, level).map((v, i) => [DRILL[i], v]));
  const dimension = DRILL[level];
  const params = costParams(state, { group_by: level >= 3 ? "prompt_version,model" : dimension });
  if (fixed.tenant !== undefined) params.tenant = fixed.tenant;
  if (fixed.feature !== undefined) params.feature = fixed.feature;
  const found = await api("/api/unit-costs", params);
  let rows = found.rows;
  if (level >= 3) rows = rows.filter((r) => String(r.prompt_version) === fixed.prompt_version);
  const crumbs = el("div", { class: "crumbs", id: "crumbs" },
    el("a", { onclick: () => go({ ...state, path: [] }) }, "all tenants"),
    ...state.path.slice(0, level).flatMap((v, i) => [" › ",
      el("a", { onclick: () => go({ ...state, path: state.path.slice(0, i + 1) }) }, `${LABELS[DRILL[i]]}: ${v}`)]));
  const onRow = level < DRILL.length - 1
    ? (row) => go({ ...state, path: [...state.path.slice(0, level), String(row[dimension])] })
    : null;
  return [
    card(`Cost by ${LABELS[dimension].toLowerCase()}`, "breakdown", [dimension, ...COST_COLUMNS], rows, { wide: true, onRow, before: crumbs }),
    chart("chart-breakdown", [{ type: "bar", x: rows.map((r) => shown(dimension, r[dimension])), y: rows.map((r) => plotted(r.cost_usd)) }],
      { title: { text: `Cost (USD) by ${LABELS[dimension].toLowerCase()}` } }),
  ];
}

async function budgetsView(state) {
  const [budgets, alerts] = await Promise.all([
    api("/api/budgets", { tenant: state.tenant }),
    api("/api/alerts", { tenant: state.tenant, kind: "budget" }),
  ]);
  return [
    card("Budgets this period", "budgets", ["id", "scope", "period", "measure", "used", "limit", "used_pct", "forecast_pct", "hard"], budgetRows(budgets.budgets), { wide: true }),
    card("Budget alerts", "budget-alerts", ["created_at", "tenant", "state", "period", "message"], alerts.alerts, { wide: true }),
  ];
}

async function anomaliesView(state) {
  const found = await api("/api/alerts", { tenant: state.tenant, kind: "anomaly" });
  const alerts = found.alerts;
  const selected = alerts.find((a) => a.id === state.path[0]) || alerts.find((a) => a.explanation);
  const parts = [card("Anomalies", "anomalies", ["created_at", "tenant", "state", "message"], alerts,
    { wide: true, onRow: (row) => go({ ...state, path: [row.id] }) })];
  if (selected && selected.explanation) parts.push(...explanation(selected));
  return parts;
}

function explanation(alert) {
  // The explanation splits the change in cost per minute into parts that add up exactly.
  const e = alert.explanation;
  const rows = [];
  const walk = (prefix, value) => {
    if (value !== null && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) walk(prefix ? `${prefix} / ${k}` : k, v);
    } else if (typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value)) {
      rows.push({ part: prefix, change_usd: value });
    }
  };
  walk("", e.decomposition || {});
  const title = `${alert.tenant}: ${e.anomaly || "anomaly"} (${alert.message})`;
  return [
    card(`Why: ${title}`, "explanation", ["part", "change_usd"], rows, { wide: true }),
    chart("chart-explanation", [{ type: "bar", orientation: "h", y: rows.map((r) => r.part), x: rows.map((r) => plotted(r.change_usd)) }],
      { title: { text: "Change in cost per minute, by cause (USD)" }, margin: { l: 220, t: 30, r: 10, b: 40 } }),
  ];
}

async function promptsView(state) {
  const range = monthRange(state.month);
  const found = await api("/api/prompt-versions", { feature: state.feature, tenant: state.tenant, start: range.start, end: range.end });
  const rows = found.versions || found.rows || found;
  const label = (r) => `${shown("feature", r.feature)} ${shown("prompt_version", r.prompt_version)}`;
  return [
    card("Prompt versions side by side", "prompt-versions", ["feature", "prompt_version", "requests", "error_pct", "cost_per_request_usd", "cost_per_successful_request_usd", "input_tokens_per_request", "output_tokens_per_request", "latency_p50_ms", "latency_p95_ms", "cost_usd"], rows, { wide: true }),
    chart("chart-prompts", [{ type: "bar", x: rows.map(label), y: rows.map((r) => plotted(r.cost_per_request_usd)) }],
      { title: { text: "Cost per request (USD)" } }),
  ];
}

async function marginsView(state) {
  const found = await api("/api/margins", { period: state.month, tenant: state.tenant });
  const rows = found.tenants;
  return [
    card("Margins per tenant", "margins", ["tenant", "revenue_usd", "cost_usd", "margin_usd", "margin_pct", "requests", "cost_per_successful_request_usd"], rows, { wide: true }),
    chart("chart-margins", [
      { type: "bar", name: "revenue", x: rows.map((r) => r.tenant), y: rows.map((r) => plotted(r.revenue_usd)) },
      { type: "bar", name: "cost", x: rows.map((r) => r.tenant), y: rows.map((r) => plotted(r.cost_usd)) },
    ], { title: { text: "Revenue and cost (USD)" }, barmode: "group" }),
  ];
}

const VIEWS = { overview, breakdown, budgets: budgetsView, anomalies: anomaliesView, prompts: promptsView, margins: marginsView };

// ---- filters and rendering ----

async function fillFilters(state) {
  const form = document.getElementById("filters");
  form.month.value = state.month;
  const range = monthRange(state.month);
  const options = await Promise.all(["tenant", "feature", "model"].map((d) =>
    api("/api/unit-costs", { group_by: d, start: range.start, end: range.end })));
  ["tenant", "feature", "model"].forEach((d, i) => {
    const select = form[d];
    const values = options[i].rows.map((r) => r[d]).filter((v) => v !== null).sort();
    if (state[d] && !values.includes(state[d])) values.push(state[d]);
    select.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v }, v)));
    select.value = state[d];
  });
}

let rendering = 0;

async function render() {
  const state = readState();
  const mine = ++rendering;
  const status = document.getElementById("status");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  try {
    await fillFilters(state);
    const view = VIEWS[state.view] || overview;
    const parts = await view(state);
    if (mine !== rendering) return;
    document.getElementById("view").replaceChildren(...parts);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = String(mine);
  } catch (err) {
    status.textContent = "could not load: " + err.message;
  }
}

document.getElementById("filters").addEventListener("change", (event) => {
  const form = event.currentTarget;
  const state = readState();
  go({ ...state, month: form.month.value || state.month, tenant: form.tenant.value,
    feature: form.feature.value, model: form.model.value, path: state.view === "breakdown" ? [] : state.path });
});
document.getElementById("nav").addEventListener("click", (event) => {
  const view = event.target.dataset && event.target.dataset.view;
  if (!view) return;
  event.preventDefault();
  go({ ...readState(), view, path: [] });
});
window.addEventListener("popstate", render);
render();
setInterval(() => { if (!document.hidden) render(); }, 30000);
