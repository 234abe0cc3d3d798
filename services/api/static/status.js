// The status page's script: polls /status.json (counts and one page of the node table,
// as the filter asks) and re-renders; a row opened shows that node's detail, fetched
// once from /status/nodes/<id>.json. Every value from the gateway is written with
// textContent, never as HTML.
"use strict";

const DATA_URL = "/status.json";
const DETAIL_URL = "/status/nodes/";
const FILTER_DELAY_MS = 250;
const FALLBACK_POLL_S = 2;
const FETCH_TIMEOUT_MS = 10000;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  return tr;
}

function fill(sectionId, rows, emptyText, columns, count) {
  const section = document.getElementById(sectionId);
  const body = section.querySelector("tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el("td", emptyText);
    td.colSpan = columns;
    body.appendChild(row([td], { class: "empty" }));
  }
  const shown = section.querySelector("h2 .count");
  if (shown) shown.textContent = "(" + (count === undefined ? rows.length : count) + ")";
}

function age(seconds) {
  if (seconds === null) return "—";
  if (seconds < 60) return seconds.toFixed(1) + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  return Math.floor(seconds / 3600) + " h ago";
}

function badge(good, text) {
  return el("span", text, "badge " + (good ? "ok" : "bad"));
}

function renderHeader(status) {
  document.getElementById("gateway-name").textContent = status.name;
  document.getElementById("gateway-address").textContent = status.address;
  document.title = status.name + " · grid gateway status";
  const ready = status.readiness.ready;
  const header = document.getElementById("readiness-badge");
  header.textContent = ready ? "ready" : "not ready";
  header.className = "badge " + (ready ? "ok" : "bad");
  document.getElementById("updated").textContent =
    "updated " + new Date().toLocaleTimeString() + " · node TTL " + status.node_ttl_s + " s";
}

function renderReadiness(readiness) {
  document.getElementById("readiness-reason").textContent =
    readiness.reason === null ? "Ready: the broker is connected and every worker consumes."
                              : "Not ready: " + readiness.reason;
  const broker = readiness.broker_connected;
  const rows = [row([el("td", "message broker"),
                     wrap(badge(broker, broker ? "connected" : "unreachable"))],
                    { "data-part": "broker" })];
  for (const [queue, consumers] of Object.entries(readiness.consumers).sort()) {
    const text = consumers + (consumers === 1 ? " worker consumes" : " workers consume");
    rows.push(row([el("td", queue), wrap(badge(consumers > 0, text))], { "data-part": queue }));
  }
  fill("readiness", rows, "", 2);
}

function wrap(child) {
  const td = el("td");
  td.appendChild(child);
  return td;
}

// --- the counts --------------------------------------------------------------------

const COUNTS = [["registered", "registered"], ["live", "live"], ["offline", "offline"],
                ["heard", "heard on the bus"], ["versioned", "versioned"],
                ["bridged", "bridged"]];

function renderSummary(summary) {
  const counts = COUNTS.map(([key, label]) => {
    const cell = el("div", label);
    cell.dataset.count = key;
    cell.prepend(el("b", summary[key]));
    return cell;
  });
  document.querySelector("#summary .counts").replaceChildren(...counts);
  document.querySelector("#summary .note").textContent =
    summary.error !== null ? "The node list cannot be read: " + summary.error
    : summary.source === "membership"
      ? "From this API process's membership view (followed live; no request per refresh)."
      : "From the registry's list, read " + summary.list_age_s.toFixed(1) +
        " s ago (this API process's membership view is not in sync yet).";
}

// --- the node table ------------------------------------------------------------------

// What the viewer asked for: the filter and the page. Changing the filter resets the page.
const view = { kind: "node", text: "", state: "all", page: 1, pages: 1 };
// Rows opened, and the detail fetched for each (node id -> detail, or an error text).
const opened = new Set();
const details = new Map();

function tableQuery() {
  const params = new URLSearchParams();
  const text = view.text.trim();
  if (text !== "" && view.kind === "tag") {
    for (const tag of text.split(",").map((t) => t.trim()).filter((t) => t !== "")) {
      params.append("tag", tag);
    }
  } else if (text !== "") {
    params.set(view.kind, text);
  }
  if (view.state !== "all") params.set("state", view.state);
  if (view.page > 1) params.set("page", String(view.page));
  return params.toString();
}

function stateText(node) {
  if (!node.live) return "offline";
  if (node.heard === false) return "live (join only)";
  return node.bridged ? "live (bridged)" : "live";
}

function nodeRow(node) {
  const tr = row([
    el("td", node.node_id, "mono"), el("td", node.node_address, "mono"),
    wrap(badge(node.live, stateText(node))),
    el("td", node.version === null ? "—" : node.version, "mono"),
    el("td", age(node.last_seen_s), "num"),
  ], { "data-node-id": node.node_id, "aria-expanded": String(opened.has(node.node_id)) });
  if (opened.has(node.node_id)) tr.classList.add("open");
  tr.addEventListener("click", () => toggle(node.node_id));
  return tr;
}

function detailRow(nodeId) {
  const td = el("td");
  td.colSpan = 5;
  const detail = details.get(nodeId);
  if (detail === undefined) {
    td.appendChild(el("span", "asking the node…", "muted"));
  } else if (typeof detail === "string") {
    td.appendChild(el("span", detail, "muted"));
  } else {
    td.append(namesLine("models", detail.models), namesLine("tags", detail.tags));
    if (detail.note !== null) td.appendChild(el("div", detail.note, "muted"));
  }
  return row([td], { class: "detail", "data-detail-of": nodeId });
}

function namesLine(label, names) {
  const line = el("div", undefined, label);
  line.appendChild(el("span", label, "label"));
  if (names.names === null) {
    line.appendChild(el("span", "no answer", "muted"));
    return line;
  }
  if (names.names.length === 0) line.appendChild(el("span", "none", "muted"));
  for (const name of names.names) line.appendChild(el("span", name, "chip"));
  // The server lists a node's first names only (GRID_STATUS_MAX_NAMES); say how many more.
  if (names.total > names.names.length) {
    line.appendChild(el("span", " and " + (names.total - names.names.length) + " more",
                        "muted"));
  }
  return line;
}

let lastTable = null;

function renderTable(table) {
  lastTable = table;
  view.pages = table.pages;
  const rows = [];
  for (const node of table.rows) {
    rows.push(nodeRow(node));
    if (opened.has(node.node_id)) rows.push(detailRow(node.node_id));
  }
  const filtered = table.node !== null || table.model !== null || table.tag !== null ||
                   table.state !== "all";
  fill("nodes", rows, filtered ? "no node matches" : "no node registered", 5, table.matching);
  document.getElementById("page-info").textContent =
    "page " + table.page + " of " + table.pages + " · " + table.matching +
    (filtered ? " matching" : " nodes");
  document.getElementById("page-prev").disabled = table.page <= 1;
  document.getElementById("page-next").disabled = table.page >= table.pages;
  const search = table.search;
  document.querySelector("#nodes .note").textContent =
    search === null ? ""
    : search.error !== null ? "The search behind this filter failed: " + search.error
    : "Filtered by a search: " + search.answered + " of " + search.asked +
      " nodes answered.";
}

async function toggle(nodeId) {
  if (opened.has(nodeId)) {
    opened.delete(nodeId);
    details.delete(nodeId);
  } else {
    opened.add(nodeId);
    fetchDetail(nodeId);
  }
  if (lastTable !== null) renderTable(lastTable);
}

async function fetchDetail(nodeId) {
  let detail;
  try {
    const response = await fetch(DETAIL_URL + encodeURIComponent(nodeId) + ".json", {
      cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    const body = await response.json();
    detail = response.ok ? body : (body.message || "HTTP " + response.status);
  } catch (error) {
    detail = "The gateway's API does not answer (" + error.message + ").";
  }
  if (!opened.has(nodeId)) return;
  details.set(nodeId, detail);
  if (lastTable !== null) renderTable(lastTable);
}

function renderSearches(searches) {
  const rows = searches.map((search) => row([
    el("td", new Date(search.at * 1000).toLocaleTimeString(), "num"),
    el("td", search.route, "mono"), el("td", search.op, "mono"),
    el("td", search.latency_ms.toFixed(1) + " ms", "num"),
    el("td", search.asked, "num"), el("td", search.answered, "num"),
    wrap(badge(search.outcome === "ok", search.outcome)),
  ]));
  fill("recent-searches", rows, "no search through this API process yet", 7);
}

function render(status) {
  renderHeader(status);
  renderReadiness(status.readiness);
  renderSummary(status.summary);
  renderTable(status.nodes);
  renderSearches(status.recent_searches);
  // When the page first showed the network, and last rendered (ms since navigation):
  // read by the benchmark (bench/status_page.py).
  const marks = document.documentElement.dataset;
  if (marks.firstRenderMs === undefined) marks.firstRenderMs = String(performance.now());
  marks.lastRenderMs = String(performance.now());
}

// --- polling -------------------------------------------------------------------------

let asked = 0; // the number of the latest request: an older answer is not rendered
let timer = null;
let refreshS = FALLBACK_POLL_S;

async function load() {
  const mine = ++asked;
  const banner = document.getElementById("banner");
  clearTimeout(timer);
  try {
    const query = tableQuery();
    const response = await fetch(DATA_URL + (query ? "?" + query : ""), {
      cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    const body = await response.json();
    if (mine !== asked) return; // the filter changed meanwhile: its own load renders
    if (!response.ok) throw new Error(body.message || "HTTP " + response.status);
    render(body);
    refreshS = Math.max(1, body.refresh_s);
    banner.textContent = "";
  } catch (error) {
    if (mine !== asked) return;
    banner.textContent = "The gateway's API does not answer (" + error.message +
      "); showing the last status.";
  }
  // The next poll starts after this one ends: a slow API never sees overlapping polls.
  timer = setTimeout(load, refreshS * 1000);
}

function watchControls() {
  const text = document.getElementById("filter-text");
  const kind = document.getElementById("filter-kind");
  const state = document.getElementById("filter-state");
  let typing = null;
  const refilter = () => {
    view.kind = kind.value;
    view.text = text.value;
    view.state = state.value;
    view.page = 1;
    load();
  };
  text.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(refilter, FILTER_DELAY_MS);
  });
  kind.addEventListener("change", refilter);
  state.addEventListener("change", refilter);
  document.getElementById("node-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    refilter();
  });
  document.getElementById("page-prev").addEventListener("click", () => {
    view.page = Math.max(1, view.page - 1);
    load();
  });
  document.getElementById("page-next").addEventListener("click", () => {
    view.page = Math.min(view.pages, view.page + 1);
    load();
  });
}

watchControls();
load();
