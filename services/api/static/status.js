// The status page's script: polls /status.json and re-renders the page.
// Every value from the gateway is written with textContent, never as HTML.
"use strict";

const DATA_URL = "/status.json";
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

function fill(sectionId, rows, emptyText, columns) {
  const section = document.getElementById(sectionId);
  const body = section.querySelector("tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el("td", emptyText);
    td.colSpan = columns;
    body.appendChild(row([td], { class: "empty" }));
  }
  const count = section.querySelector("h2 .count");
  if (count) count.textContent = "(" + rows.length + ")";
}

function chips(names, missing, total) {
  const td = el("td");
  if (names === null) {
    td.appendChild(el("span", missing, "muted"));
    return td;
  }
  if (names.length === 0) td.appendChild(el("span", "none", "muted"));
  for (const name of names) td.appendChild(el("span", name, "chip"));
  // The server lists a node's first names only (GRID_STATUS_MAX_NAMES); say how many more.
  if (total > names.length) td.appendChild(el("span", " and " + (total - names.length) +
                                              " more", "muted"));
  return td;
}

function age(seconds) {
  if (seconds === null) return "never";
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
    "updated " + new Date().toLocaleTimeString() + " · nodes read " +
    status.refreshed_s_ago.toFixed(1) + " s ago · node TTL " + status.node_ttl_s + " s";
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

function renderNodes(nodes, inventory) {
  const missing = inventory.error === null ? "no answer" : "unavailable";
  const live = nodes.live.map((node) => row([
    el("td", node.node_id, "mono"), el("td", node.node_address, "mono"),
    el("td", age(node.last_seen_s), "num"),
    chips(node.models, missing, node.models_total), chips(node.tags, missing, node.tags_total),
  ], { "data-node-id": node.node_id }));
  const note = nodes.error !== null ? "The registry cannot list the nodes: " + nodes.error
    : inventory.error !== null ? "Models and tags unavailable: " + inventory.error
    : "Models and tags as the nodes answered the page's own search: " + inventory.answered +
      " of " + inventory.asked + " live nodes answered.";
  document.querySelector("#live-nodes .note").textContent = note;
  fill("live-nodes", live, nodes.error === null ? "no live node" : "unknown", 5);
  const offline = nodes.offline.map((node) => row([
    el("td", node.node_id, "mono"), el("td", node.node_address, "mono"),
    el("td", age(node.last_seen_s), "num"),
  ], { "data-node-id": node.node_id }));
  fill("offline-nodes", offline, nodes.error === null ? "no offline node" : "unknown", 3);
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
  renderNodes(status.nodes, status.inventory);
  renderSearches(status.recent_searches);
}

async function poll() {
  const banner = document.getElementById("banner");
  let next = FALLBACK_POLL_S;
  try {
    const response = await fetch(DATA_URL, {
      cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || "HTTP " + response.status);
    render(body);
    next = Math.max(1, body.refresh_s);
    banner.textContent = "";
  } catch (error) {
    banner.textContent = "The gateway's API does not answer (" + error.message +
      "); showing the last status.";
  }
  // The next poll starts after this one ends: a slow API never sees overlapping polls.
  setTimeout(poll, next * 1000);
}

poll();
