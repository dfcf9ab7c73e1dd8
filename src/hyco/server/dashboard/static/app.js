// The hyco dashboard: plain JavaScript, no libraries. Data arrives as server-sent events ("snapshot" once a
// second: hybrid connections, listeners, relayed connections with their bytes so far, recent requests); the
// detail view and replay call the inspector API (/$management/requests/http) with the session cookie. Keys
// never reach this page after login.
"use strict";

const $ = (id) => document.getElementById(id);
const API = "/$management/requests/http";
let events = null;
let current = null; // the request shown in the detail view
const history = []; // {time, http, connections} for the rate chart

function show(loggedIn, message) {
  $("login").hidden = loggedIn;
  $("main").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = form.get("token") ? { token: form.get("token") } : { keyName: form.get("keyName"), key: form.get("key") };
  const answer = await fetch("/$dashboard/login", { method: "POST", body: JSON.stringify(body) });
  event.target.reset();
  if (!answer.ok) {
    const error = await answer.json().catch(() => ({}));
    show(false, (error.error && error.error.message) || `login failed (${answer.status})`);
    return;
  }
  connect();
});

$("logout").addEventListener("click", async () => {
  await fetch("/$dashboard/logout", { method: "POST" });
  if (events) events.close();
  show(false, "Logged out.");
});

function connect() {
  if (events) events.close();
  events = new EventSource("/$dashboard/events");
  events.addEventListener("snapshot", (event) => {
    show(true);
    $("state").textContent = "live";
    $("state").className = "live";
    render(JSON.parse(event.data));
  });
  events.addEventListener("expired", (event) => {
    events.close();
    show(false, "Your session expired: " + JSON.parse(event.data).message);
  });
  events.onerror = () => {
    $("state").textContent = "offline";
    $("state").className = "";
    if (events.readyState === EventSource.CLOSED) show(false, "Log in to follow the relay.");
  };
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, columns, onClick) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    for (const column of columns) cell(row, column(item));
    if (onClick) row.addEventListener("click", () => onClick(item));
    body.appendChild(row);
  }
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

// How long since `since` (epoch seconds), by the relay's clock (`now`), so a skewed browser clock does not matter.
function age(since, now) {
  const s = Math.max(0, Math.floor(now - since));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function render(data) {
  const t = data.totals;
  $("totals").textContent = `${t.listeners} listeners, ${t.active_connections} relayed connections, ` +
    `${t.pending_connections} senders waiting, ${t.http_requests_in_flight} HTTP requests in flight`;
  fill("entities", data.hybridConnections, [
    (h) => h.name, (h) => h.status, (h) => h.listeners, (h) => h.activeConnections,
    (h) => bytes(h.bytesIn), (h) => bytes(h.bytesOut), (h) => h.httpRequests,
  ]);
  fill("listeners", data.listeners, [
    (l) => l.entity, (l) => l.id, (l) => l.remote, (l) => l.node, (l) => clock(l.onlineSince),
    (l) => age(l.onlineSince, data.time), (l) => clock(l.tokenExpiresAt),
  ]);
  fill("connections", data.connections, [
    (c) => c.entity, (c) => c.trackingId, (c) => c.remote, (c) => clock(c.since),
    (c) => age(c.since, data.time), (c) => bytes(c.bytesIn), (c) => bytes(c.bytesOut),
  ]);
  fill("requests", data.requests, [
    (r) => new Date(r.start).toLocaleTimeString(), (r) => r.request.method, (r) => r.uri,
    (r) => (r.response ? r.response.status_code : "…"), (r) => `${(r.duration / 1e6).toFixed(1)} ms`,
    (r) => bytes(r.request.body.size), (r) => (r.response ? bytes(r.response.body.size) : ""),
  ], (r) => open(r.id));
  const http = data.hybridConnections.reduce((sum, h) => sum + h.httpRequests, 0);
  history.push({ time: data.time, http, connections: t.active_connections });
  while (history.length && history[0].time < data.time - 300) history.shift();
  chart();
}

function chart() {
  const canvas = $("rates");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (history.length < 2) return;
  const now = history[history.length - 1].time;
  const rates = history.slice(1).map((p, i) => ({
    time: p.time, http: (p.http - history[i].http) / Math.max(p.time - history[i].time, 0.001), connections: p.connections,
  }));
  const top = Math.max(1, ...rates.map((r) => Math.max(r.http, r.connections)));
  const x = (time) => canvas.width - ((now - time) / 300) * canvas.width;
  const y = (value) => canvas.height - 4 - (value / top) * (canvas.height - 8);
  for (const [key, colour] of [["http", "#1f6feb"], ["connections", "#d9480f"]]) {
    g.strokeStyle = colour;
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(r.time), y(r[key])) : g.moveTo(x(r.time), y(r[key]))));
    g.stroke();
  }
  g.fillStyle = "#666";
  g.fillText(`max ${top.toFixed(1)}`, 4, 12);
}

function raw(body) {
  return new TextDecoder().decode(Uint8Array.from(atob(body.base64), (c) => c.charCodeAt(0)));
}

function decode(body) {
  const text = raw(body);
  let shown = text;
  try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as is */ }
  return shown + (body.truncated ? `\n… (${body.size} bytes in all)` : "");
}

function head(lines, headers) {
  for (const [name, values] of Object.entries(headers)) for (const v of values) lines.push(`${name}: ${v}`);
  return lines.join("\n");
}

function curl(r) {
  const quote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
  const parts = ["curl", "-X", r.request.method, quote(location.origin + r.uri)];
  for (const [name, values] of Object.entries(r.request.headers)) {
    if (["host", "content-length", "via", "connection"].includes(name.toLowerCase())) continue;
    for (const v of values) parts.push("-H", quote(`${name}: ${v === "[redacted]" ? "<token>" : v}`));
  }
  if (r.request.body.size) parts.push("--data-binary", quote(raw(r.request.body)));
  return parts.join(" ");
}

async function open(id) {
  const answer = await fetch(`${API}/${encodeURIComponent(id)}`);
  if (!answer.ok) return;
  const r = await answer.json();
  current = r;
  $("detail").hidden = false;
  $("detail-id").textContent = r.id;
  $("detail-message").textContent = "";
  $("curl").textContent = curl(r);
  $("request-head").textContent = head([`${r.request.method} ${r.uri}`], r.request.headers);
  $("request-body").textContent = decode(r.request.body);
  $("response-head").textContent = r.response ? head([`${r.response.status_code}`], r.response.headers) : "(no response yet)";
  $("response-body").textContent = r.response ? decode(r.response.body) : "";
  $("replay").disabled = !r.replayable;
}

$("replay").addEventListener("click", async () => {
  if (!current) return;
  const answer = await fetch(API, { method: "POST", body: JSON.stringify({ id: current.id }) });
  const result = await answer.json().catch(() => ({}));
  $("detail-message").textContent = answer.ok
    ? `replayed: ${result.replayStatus}`
    : `replay failed: ${(result.error && result.error.message) || answer.status}`;
});

$("copy-curl").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("curl").textContent);
    $("detail-message").textContent = "copied";
  } catch (e) {
    $("detail-message").textContent = "select the command below and copy it";
  }
});

$("clear").addEventListener("click", () => fetch(API, { method: "DELETE" }));

connect();
