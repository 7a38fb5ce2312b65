// Renders the query API's answers as tables; money stays a decimal string end to end.
"use strict";

const LABELS = {
  tenant: "Tenant", feature: "Feature", prompt_version: "Prompt version", model: "Model",
  requests: "Requests", input_tokens: "Input tokens", output_tokens: "Output tokens",
  cost_usd: "Cost (USD)",
};
const NUMERIC = new Set(["requests", "input_tokens", "output_tokens", "cost_usd"]);

function cell(tag, text, numeric) {
  const el = document.createElement(tag);
  el.textContent = text === null || text === undefined ? "—" : String(text);
  if (numeric) el.className = "num";
  return el;
}

function usd(value) {
  return "$" + value;
}

function renderTable(container, columns, rows) {
  container.replaceChildren();
  if (!rows.length) {
    container.append(cell("p", "No calls metered yet."));
    container.firstChild.className = "empty";
    return;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  columns.forEach((c) => head.append(cell("th", LABELS[c] || c, NUMERIC.has(c))));
  const body = table.createTBody();
  rows.forEach((row) => {
    const tr = body.insertRow();
    tr.dataset.key = columns.filter((c) => !NUMERIC.has(c)).map((c) => row[c]).join("|");
    columns.forEach((c) => {
      const value = c === "cost_usd" ? usd(row[c]) : row[c];
      tr.append(cell("td", value, NUMERIC.has(c)));
    });
  });
  container.append(table);
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const totals = await getJSON("/api/costs?group_by=");
    const total = totals.rows[0] || { requests: 0, cost_usd: "0", input_tokens: 0, output_tokens: 0 };
    const kpis = document.getElementById("kpis");
    kpis.replaceChildren();
    [["Total cost", usd(total.cost_usd), "total-cost"], ["Requests", total.requests, "total-requests"],
     ["Input tokens", total.input_tokens || 0, "total-input"], ["Output tokens", total.output_tokens || 0, "total-output"]]
      .forEach(([label, value, id]) => {
        const box = document.createElement("div");
        box.className = "kpi";
        const v = cell("div", value); v.className = "value"; v.id = id;
        const l = cell("div", label); l.className = "label";
        box.append(v, l);
        kpis.append(box);
      });
    for (const el of document.querySelectorAll("[data-group]")) {
      const group = el.dataset.group;
      const data = await getJSON("/api/costs?group_by=" + encodeURIComponent(group));
      renderTable(el, [...group.split(","), "requests", "input_tokens", "output_tokens", "cost_usd"], data.rows);
    }
    const alerts = await getJSON("/api/alerts");
    const container = document.getElementById("alerts");
    renderTable(container, ["created_at", "tenant", "state", "period", "message"], alerts.alerts);
    container.querySelectorAll("tbody tr").forEach((tr, i) => {
      tr.children[2].className = "state-" + alerts.alerts[i].state;
    });
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.textContent = "could not reach the query API: " + err.message;
  }
}

refresh();
setInterval(refresh, 5000);
