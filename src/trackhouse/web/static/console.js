// The trackhouse console. Plain DOM, no framework, no build step, nothing fetched from
// elsewhere. Everything shown comes from event data anyone holding the public token can
// send, so it is only ever set as text (textContent), never parsed as HTML.
"use strict";

const STREAM_ROWS = 200;
const OVERVIEW_EVERY_MS = 5000;
const SCHEMA_EVERY_MS = 10000;
const AFTER_EVENTS_MS = 1200; // the store has loaded them by then: refresh chart and schema

const $ = (id) => document.getElementById(id);
let source = null;
let timers = [];
let overview = null;
let schema = null;
let pending = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const time = (ms) => new Date(ms).toLocaleTimeString();
const stamp = (iso) => new Date(iso).toLocaleString();

class SignedOut extends Error {}

async function api(path, options = {}) {
  const reply = await fetch(path, { credentials: "same-origin", ...options });
  if (reply.status === 401) {
    showSignIn();
    throw new SignedOut();
  }
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text;
}

// -- signing in and out -------------------------------------------------------------------
function stop() {
  if (source) source.close();
  source = null;
  timers.forEach(clearInterval);
  timers = [];
  clearTimeout(pending);
}

function showSignIn() {
  stop();
  // Leave nothing of the last project on the page.
  overview = null;
  schema = null;
  for (const id of ["chart", "stream", "schema"]) $(id).replaceChildren();
  $("top-events").tBodies[0].replaceChildren();
  $("total").textContent = "0";
  $("stream-note").textContent = "";
  $("console").hidden = true;
  $("signout").hidden = true;
  $("signin-panel").hidden = false;
  $("project").textContent = "";
  setConnection("idle", "not connected");
  $("secret").focus();
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  const reply = await fetch("/console/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ secret: $("secret").value }),
  });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    $("signin-error").textContent = body.error || `sign-in failed (${reply.status})`;
    return;
  }
  $("secret").value = "";
  showConsole(body.project);
}

async function signOut() {
  await fetch("/console/api/session", { method: "DELETE", credentials: "same-origin" });
  showSignIn();
}

function showConsole(project) {
  $("signin-panel").hidden = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  $("project").textContent = `project ${project.id} · ${project.name}`;
  $("stream").replaceChildren();
  connect();
  refreshOverview();
  refreshSchema();
  timers.push(setInterval(refreshOverview, OVERVIEW_EVERY_MS));
  timers.push(setInterval(refreshSchema, SCHEMA_EVERY_MS));
}

// -- the live stream --------------------------------------------------------------------------
function connect() {
  setConnection("idle", "connecting…");
  source = new EventSource("/console/api/stream");
  source.addEventListener("hello", () => setConnection("live", "live"));
  source.addEventListener("events", (message) => onEvents(JSON.parse(message.data)));
  source.addEventListener("dropped", (message) => {
    const { events } = JSON.parse(message.data);
    $("stream-note").textContent = `(${events} events not shown: this page fell behind)`;
  });
  source.onerror = () => {
    setConnection("error", "reconnecting…");
    // The browser reconnects by itself, unless the session is gone.
    api("/console/api/session").catch(() => {});
  };
}

function onEvents(message) {
  const list = $("stream");
  for (const event of message.events) {
    const props = event.properties;
    const item = el(
      "li",
      { class: "stream-event", dataset: { event: event.event, insertId: props.$insert_id } },
      el("span", { class: "muted", text: `${time(message.received_ms)} · ${message.endpoint} · ` }),
      el("span", { class: "name", text: event.event }),
      el("span", { class: "muted", text: ` · ${props.distinct_id}` }),
      el("pre", { text: JSON.stringify(props) }),
    );
    list.prepend(item);
  }
  if (message.more) {
    list.prepend(el("li", { class: "muted", text: `… and ${message.more} more in the same request` }));
  }
  while (list.children.length > STREAM_ROWS) list.lastElementChild.remove();
  countNow(message.received_ms, message.events.length + message.more);
  clearTimeout(pending);
  pending = setTimeout(() => {
    refreshOverview();
    refreshSchema();
  }, AFTER_EVENTS_MS);
}

// -- events per minute, top events ---------------------------------------------------------------
async function refreshOverview() {
  try {
    overview = await api("/console/api/overview");
  } catch (error) {
    if (!(error instanceof SignedOut)) setConnection("error", error.message);
    return;
  }
  drawChart();
  drawTop();
}

function countNow(receivedMs, count) {
  // Until the next refresh, count streamed events into their minute on the chart.
  if (!overview) return;
  const minute = Math.floor(receivedMs / 60000) * 60000;
  const bar = overview.minutes.find((m) => m.t === minute);
  if (!bar) return;
  bar.count += count;
  overview.total += count;
  drawChart();
}

function drawChart() {
  const chart = $("chart");
  const minutes = overview.minutes;
  const most = Math.max(1, ...minutes.map((m) => m.count));
  const width = 720 / minutes.length;
  const bars = minutes.map((m, i) => {
    const height = (m.count / most) * 170;
    const bar = svg("rect", {
      x: (i * width + 1).toFixed(1),
      y: (180 - height).toFixed(1),
      width: (width - 2).toFixed(1),
      height: height.toFixed(1),
      "data-t": m.t,
      "data-count": m.count,
    });
    if (i === minutes.length - 1) bar.classList.add("now");
    const title = svg("title", {});
    title.textContent = `${time(m.t)}: ${plural(m.count, "event")}`;
    bar.append(title);
    return bar;
  });
  chart.replaceChildren(...bars);
  chart.dataset.total = overview.total;
  $("total").textContent = overview.total.toLocaleString();
  $("chart-start").textContent = time(overview.from);
  $("chart-end").textContent = "now";
}

function bar(fraction) {
  // Through the CSSOM: the page's CSP refuses style attributes.
  const node = el("span", { class: "bar" });
  node.style.width = `${Math.round(fraction * 80)}px`;
  return node;
}

const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

function drawTop() {
  const body = $("top-events").tBodies[0];
  const most = Math.max(1, ...overview.top_events.map((t) => t.count));
  body.replaceChildren(
    ...overview.top_events.map((t) =>
      el(
        "tr",
        { dataset: { event: t.event, count: t.count } },
        el("td", {}, bar(t.count / most), t.event),
        el("td", { class: "num", text: t.count.toLocaleString() }),
      ),
    ),
  );
  if (!overview.top_events.length) {
    body.append(el("tr", {}, el("td", { colspan: "2", class: "muted", text: "no events in the last hour" })));
  }
}

// -- the schema (Lexicon) ------------------------------------------------------------------------
async function refreshSchema() {
  try {
    schema = await api("/console/api/schema");
  } catch (error) {
    if (!(error instanceof SignedOut)) setConnection("error", error.message);
    return;
  }
  drawSchema();
}

function drawSchema() {
  const box = $("schema");
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.event));
  const filter = $("schema-filter").value.trim().toLowerCase();
  const matches = (text) => text.toLowerCase().includes(filter);
  const shown = schema.events.filter(
    (e) => !filter || matches(e.event) || e.properties.some((p) => matches(p.name)),
  );
  box.replaceChildren(
    ...shown.map((e) => {
      const rows = e.properties.map((p) =>
        el(
          "tr",
          { dataset: { property: p.name } },
          el("td", { text: p.name + (p.built_in ? " (built in)" : "") }),
          el("td", {}, ...Object.entries(p.types).map(([type, n]) => el("span", { class: "type", dataset: { type }, text: `${type} ${n.toLocaleString()}` }))),
          el("td", { class: "num", text: p.count.toLocaleString() }),
          el("td", { text: stamp(p.first_seen) }),
          el("td", { text: stamp(p.last_seen) }),
        ),
      );
      const details = el(
        "details",
        { dataset: { event: e.event, count: e.count } },
        el("summary", {}, el("strong", { text: e.event }), el("span", { class: "muted", text: ` · ${plural(e.count, "event")} · first seen ${stamp(e.first_seen)} · last seen ${stamp(e.last_seen)}` })),
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["Property", "Types seen", "Events", "First seen", "Last seen"].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...rows),
        ),
      );
      details.open = open.has(e.event);
      return details;
    }),
  );
  if (!schema.events.length) box.append(el("p", { class: "muted", text: "no events stored yet" }));
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("schema-filter").addEventListener("input", () => schema && drawSchema());
  api("/console/api/session").then((who) => showConsole(who.project), () => {});
});
