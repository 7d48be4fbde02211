// The marketarena dashboard: every number on the page comes from the REST API of the server
// that serves it. A token, when the server needs one, is kept in sessionStorage (this tab
// only) and sent as "Authorization: Bearer <token>"; the page and its files need none.
"use strict";

const TOKEN_KEY = "marketarena-token";
const POLL_MS = 1000;
const MAX_CURVES = 12; // runs drawn on the equity and drawdown charts
const LEADERBOARD_COLUMNS = [
  ["rank", "#"], ["run_id", "run"], ["model", "model"], ["final_nav", "final NAV"],
  ["total_return", "total return"], ["annual_return", "annual return"],
  ["sharpe", "Sharpe"], ["sortino", "Sortino"], ["max_drawdown", "max drawdown"],
  ["volatility", "volatility"], ["turnover", "turnover"],
];
const PERCENT = new Set(["total_return", "annual_return", "max_drawdown", "volatility"]);

const state = { jobs: new Map(), runs: [], chosenRun: null, refreshing: false };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    showLogin(token ? data.error || "wrong token" : "");
    throw new ApiError(401, data.error || "a token is needed");
  }
  if (!response.ok) throw new ApiError(response.status, data.error || response.statusText);
  return data;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmt(key, value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (PERCENT.has(key)) return `${(100 * value).toFixed(2)}%`;
  if (key === "final_nav") return value.toFixed(2);
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(3);
}

function say(message) {
  document.getElementById("message").textContent = message || "";
}

function showLogin(error) {
  document.getElementById("login").hidden = false;
  document.getElementById("dashboard").hidden = true;
  document.getElementById("login-error").textContent = error || "";
  document.getElementById("server-status").textContent = "token needed";
}

// ------------------------------------------------------------------ leaderboard
async function refreshLeaderboard() {
  let board;
  try {
    board = await api("GET", "/leaderboard");
  } catch (err) { // e.g. runs over different dates: say why, keep the rest of the page
    if (err.status === 401) throw err;
    board = { title: `no leaderboard: ${err.message}`, rows: [] };
  }
  document.getElementById("leaderboard-title").textContent = board.title || "";
  const rows = board.rows || [];
  const columns = LEADERBOARD_COLUMNS.filter(([key]) => rows.some((r) => key in r));
  const head = document.querySelector("#leaderboard thead");
  const body = document.querySelector("#leaderboard tbody");
  head.replaceChildren(el("tr"));
  for (const [, label] of columns) head.firstChild.append(el("th", label));
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr");
    tr.dataset.run = row.run_id;
    for (const [key] of columns) {
      tr.append(el("td", fmt(key, row[key]), typeof row[key] === "number" ? "num" : ""));
    }
    body.append(tr);
  }
}

// ------------------------------------------------------------------ curves
function drawdowns(navs) {
  let peak = -Infinity;
  return navs.map((nav) => {
    peak = Math.max(peak, nav);
    return nav / peak - 1;
  });
}

const LAYOUT = {
  margin: { l: 55, r: 10, t: 30, b: 35 },
  legend: { orientation: "h", y: -0.15 },
  hovermode: "x unified",
  paper_bgcolor: "rgba(0,0,0,0)",
};

async function history(runId) {
  return api("GET", `/positions/history?model=${encodeURIComponent(runId)}`);
}

async function refreshCurves() {
  const drawn = state.runs.filter((r) => r.days > 0).slice(-MAX_CURVES);
  const histories = await Promise.all(drawn.map((r) => history(r.run_id)));
  const equity = [];
  const drawdown = [];
  histories.forEach((h, i) => {
    const dates = h.days.map((d) => d.date);
    const navs = h.days.map((d) => d.nav);
    const name = drawn[i].run_id;
    equity.push({ x: dates, y: navs, name, type: "scatter", mode: "lines" });
    drawdown.push({ x: dates, y: drawdowns(navs), name, type: "scatter", mode: "lines" });
  });
  Plotly.react("equity-chart", equity, { ...LAYOUT, title: { text: "NAV" } },
               { responsive: true });
  Plotly.react("drawdown-chart", drawdown,
               { ...LAYOUT, title: { text: "drawdown from peak" }, yaxis: { tickformat: ".0%" } },
               { responsive: true });
}

async function refreshPositions() {
  const runId = state.chosenRun;
  const summary = document.getElementById("run-summary");
  const holdings = document.querySelector("#holdings tbody");
  if (!runId) {
    summary.textContent = "no run yet: start a job below";
    Plotly.react("allocation-chart", [], { ...LAYOUT, title: { text: "allocation" } });
    holdings.replaceChildren();
    return;
  }
  const h = await history(runId);
  const dates = h.days.map((d) => d.date);
  const symbols = [...new Set(h.days.flatMap((d) => Object.keys(d.weights)))]
    .filter((s) => s !== "CASH").sort();
  const traces = [...symbols, "CASH"].map((s) => ({
    x: dates, y: h.days.map((d) => d.weights[s] || 0), name: s, type: "scatter",
    mode: "lines", stackgroup: "weights",
  }));
  Plotly.react("allocation-chart", traces,
               { ...LAYOUT, title: { text: `allocation of ${runId}` },
                 yaxis: { tickformat: ".0%", range: [0, 1] } },
               { responsive: true });
  summary.textContent = `${h.start_date} to ${h.end_date}: ${h.days.length} days, `
    + `${h.trades.length} trades, mean holding period ${fmt("", h.mean_holding_period)} days`;
  const snapshot = await api("GET", `/positions/snapshot?model=${encodeURIComponent(runId)}`);
  holdings.replaceChildren();
  for (const p of snapshot.positions) {
    const tr = el("tr");
    tr.append(el("td", p.symbol), el("td", fmt("", p.shares), "num"),
              el("td", fmt("max_drawdown", p.weight), "num"), el("td", fmt("final_nav", p.value), "num"));
    holdings.append(tr);
  }
  const cash = el("tr");
  cash.append(el("td", "cash"), el("td", ""), el("td", fmt("max_drawdown", snapshot.cash_weight), "num"),
              el("td", fmt("final_nav", snapshot.cash), "num"));
  holdings.append(cash);
}

async function refreshRuns() {
  state.runs = await api("GET", "/runs");
  const select = document.getElementById("run-select");
  const withDays = state.runs.filter((r) => r.days > 0);
  if (!withDays.some((r) => r.run_id === state.chosenRun)) {
    state.chosenRun = withDays.length ? withDays[withDays.length - 1].run_id : null;
  }
  select.replaceChildren(...withDays.map((r) => {
    const option = el("option", `${r.run_id} (${r.status}, ${r.days} days)`);
    option.value = r.run_id;
    option.selected = r.run_id === state.chosenRun;
    return option;
  }));
}

// ------------------------------------------------------------------ jobs
function progressText(job) {
  return Object.entries(job.progress || {}).map(([run, p]) => {
    if (p.total) return `${run}: ${p.done}/${p.total}`;
    return `${run}: ${p.status}`;
  }).join("; ");
}

async function act(method, path, body) {
  say("");
  try {
    const job = await api(method, path, body);
    await refreshJobs();
    return job;
  } catch (err) {
    if (err.status !== 401) say(`${err.status}: ${err.message}`);
    return null;
  }
}

function models(id) {
  return document.getElementById(id).value.split(",").map((m) => m.trim()).filter(Boolean);
}

function modelQuery(id) {
  return models(id).map((m) => `models=${encodeURIComponent(m)}`).join("&");
}

async function refreshJobs() {
  const jobs = await api("GET", "/jobs");
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  let finished = false;
  for (const job of jobs.slice().reverse()) {
    const before = state.jobs.get(job.id);
    if (before && before !== job.status) finished = true;
    state.jobs.set(job.id, job.status);
    const tr = el("tr");
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    tr.dataset.kind = job.kind;
    const cell = el("td");
    if (job.status === "queued" || job.status === "running") {
      const cancel = el("button", "cancel");
      cancel.addEventListener("click", () => act("DELETE", `/jobs/${job.id}`));
      cell.append(cancel);
    } else if ((job.status === "failed" || job.status === "cancelled") && !job.finished) {
      cell.append(el("span", "stopping...", "muted")); // its worker ends the current day
    } else if (job.status === "failed" || job.status === "cancelled") {
      const resume = el("button", "resume");
      resume.addEventListener("click", () => act("POST", "/simulate/resume"));
      cell.append(resume);
    }
    tr.append(el("td", job.id), el("td", job.kind), el("td", job.status),
              el("td", progressText(job)), el("td", job.error || "", "error"), cell);
    body.append(tr);
  }
  return finished;
}

// ------------------------------------------------------------------ data
async function refreshData() {
  const [status, coverage] = await Promise.all([
    api("GET", "/data/status"), api("GET", "/data/coverage"),
  ]);
  const span = status.first_date ? `${status.first_date} to ${status.last_date}` : "no data yet";
  const last = Object.entries(status.downloads || {})
    .map(([p, d]) => `${p}: ${d.last_download}`).join(", ");
  document.getElementById("data-status").textContent =
    `${status.symbols.length} symbols, ${span}, ${status.rows} rows, `
    + `${(status.size_bytes / 1024).toFixed(1)} KiB` + (last ? `; last download ${last}` : "");
  const body = document.querySelector("#coverage tbody");
  body.replaceChildren(...coverage.map((c) => {
    const tr = el("tr");
    tr.append(el("td", c.symbol), el("td", c.first_date), el("td", c.last_date),
              el("td", c.rows, "num"), el("td", c.gaps, "num"));
    return tr;
  }));
}

// ------------------------------------------------------------------ wiring
async function refreshAll() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    await refreshRuns();
    await Promise.all([refreshLeaderboard(), refreshCurves(), refreshPositions(),
                       refreshJobs(), refreshData()]);
    document.getElementById("server-status").textContent =
      `${state.runs.length} runs, updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (err.status !== 401) say(`${err.status || ""} ${err.message}`);
  } finally {
    state.refreshing = false;
  }
}

async function poll() {
  if (document.getElementById("dashboard").hidden) return;
  try {
    if (await refreshJobs()) await refreshAll();
  } catch (err) {
    if (err.status !== 401) say(`${err.status || ""} ${err.message}`);
  }
}

function wire() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    document.getElementById("login").hidden = true;
    document.getElementById("dashboard").hidden = false;
    refreshAll();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.reload();
  });
  document.getElementById("run-select").addEventListener("change", (event) => {
    state.chosenRun = event.target.value;
    refreshPositions().catch((err) => say(err.message));
  });
  document.getElementById("simulate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act("POST", "/simulate", {
      models: models("sim-models"),
      data: document.getElementById("sim-data").value.trim(),
      start: document.getElementById("sim-start").value,
      end: document.getElementById("sim-end").value,
    });
  });
  document.getElementById("resume-job").addEventListener("click", () => {
    const query = modelQuery("ext-models");
    act("POST", `/simulate/resume${query ? `?${query}` : ""}`);
  });
  document.getElementById("continue-job").addEventListener("click", () => {
    const query = modelQuery("ext-models");
    act("POST", `/simulate/continue${query ? `?${query}` : ""}`,
        { end: document.getElementById("ext-end").value });
  });
  refreshAll();
  setInterval(poll, POLL_MS);
}

wire();
