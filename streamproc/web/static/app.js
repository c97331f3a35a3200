// The streamproc monitor: one page, views chosen by the URL's hash, figures from /api/stream (SSE).
// Plain DOM code (no framework, no build step); every value from the server is set as text.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { config: null, pendingHistory: [], taskId: null };
const SPARK_POINTS = 300;

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function row(cells, attrs = {}) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) tr.append(cell instanceof Node ? wrapCell(cell) : el("td", cell));
  return tr;
}

function wrapCell(node) {
  const td = el("td");
  td.append(node);
  return td;
}

function badge(text) {
  return el("span", text, { class: `badge ${text}` });
}

const rate = (value) => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const seconds = (value) => (value === null || value === undefined ? "–" : value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(1)} s`);
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");

function token() {
  return $("#token").value || localStorage.getItem("streamproc-token") || "";
}

async function act(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token()}` },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || response.statusText);
  return answer;
}

function say(selector, text, isError = false) {
  const node = $(selector);
  node.textContent = text;
  node.classList.toggle("error", isError);
  node.hidden = !text;
}

// views

function renderOverview(overview) {
  $("#pending-total").textContent = overview.pending;
  $("#workers-alive").textContent = overview.workers_alive;
  $("#keda-replicas").textContent = overview.keda_replicas;
  $("#keda-note").textContent = `lagThreshold ${overview.lag_threshold}, before min/max replicas`;
  const brokerError = $("#broker-error");
  brokerError.hidden = !overview.broker_error;
  brokerError.textContent = overview.broker_error ? `offsets not read: ${overview.broker_error}` : "";
  const body = $("#queues tbody");
  body.replaceChildren(
    ...overview.queues
      .filter((q) => q.role !== "tier")
      .map((q) =>
        row(
          [q.topic, q.priority ?? "", q.partitions, q.pending, rate(q.in_per_s), rate(q.out_per_s), seconds(q.wait_p95_s), q.keda_replicas ?? "–"],
          { "data-topic": q.topic },
        ),
      ),
  );
  state.pendingHistory.push(overview.pending);
  if (state.pendingHistory.length > SPARK_POINTS) state.pendingHistory.shift();
  const top = Math.max(1, ...state.pendingHistory);
  const last = Math.max(1, state.pendingHistory.length - 1);
  const points = state.pendingHistory.map((v, i) => `${(i / last) * 300},${60 - (v / top) * 56}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  $("#spark").replaceChildren(line);
}

function renderWorkers(overview) {
  $("#worker-table tbody").replaceChildren(
    ...overview.workers.map((w) => {
      const r = w.report;
      const partitions = Object.entries(r.partitions).map(([topic, ps]) => `${topic}: ${ps.join(",")}`);
      const count = Object.values(r.partitions).reduce((n, ps) => n + ps.length, 0);
      const open = Object.entries(r.circuits).filter(([, isOpen]) => isOpen).map(([task]) => task);
      const cells = [badge(w.state), r.host, r.pid, r.version, el("span", count, { title: partitions.join("\n") }),
        `${r.in_flight} / ${r.concurrency}`, r.waiting, r.delayed, rate(w.rate_per_s), r.failed, open.join(", ") || "none",
        `${w.silent_s.toFixed(0)} s ago`];
      return row(cells, { "data-worker": r.worker, "data-state": w.state, "data-pid": r.pid });
    }),
  );
}

function renderTiers(overview) {
  $("#delayed-total").textContent = overview.delayed_in_workers;
  $("#tier-table tbody").replaceChildren(
    ...overview.queues
      .filter((q) => q.role === "tier")
      .map((q) => row([q.topic, seconds(q.delay_s), q.partitions, q.pending, rate(q.in_per_s), rate(q.out_per_s), seconds(q.wait_p95_s)], { "data-topic": q.topic })),
  );
}

function replayButton(label, body) {
  const button = el("button", label, { class: "small" });
  button.disabled = !state.config?.actions;
  button.title = state.config?.actions ? "" : "read-only: start streamproc web with STREAMPROC_WEB_TOKEN";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const done = await act("/api/dlq/replay", body);
      say("#dlq-message", `replayed ${done.sent} (already replayed: ${done.already_replayed})`);
      await loadDlq();
    } catch (error) {
      say("#dlq-message", `replay failed: ${error.message}`, true);
      button.disabled = false;
    }
  });
  return button;
}

function taskLink(taskId) {
  return taskId ? el("a", taskId, { href: `#/task/${encodeURIComponent(taskId)}` }) : "";
}

function renderDlq(page) {
  $("#dlq-topic").textContent = state.config?.dlq_topic ?? "";
  $("#dlq-total").textContent = page.total;
  $("#dlq-reasons tbody").replaceChildren(
    ...page.by_reason.map((g) => row([g.reason, g.task, g.count, replayButton("replay all", { reason: g.reason, task: g.task })])),
  );
  const replayed = new Set(page.replayed || []);
  $("#dlq-latest tbody").replaceChildren(
    ...page.latest.map((l) =>
      row(
        [l.id, l.task ?? "", taskLink(l.task_id), l.reason ?? "", `${l.error_type}: ${l.error}`, l.attempt, when(l.failed_at),
          replayed.has(l.id) ? "✓" : "", replayButton("replay", { ids: [l.id] })],
        { "data-id": l.id, "data-task-id": l.task_id ?? "" },
      ),
    ),
  );
}

async function loadDlq() {
  const response = await fetch("/api/dlq");
  if (response.ok) renderDlq(await response.json());
}

async function loadTask(taskId) {
  $("#task-id").textContent = taskId;
  const response = await fetch(`/api/tasks/${encodeURIComponent(taskId)}`);
  if (!response.ok) return say("#task-message", `lookup failed: ${response.statusText}`, true);
  const status = await response.json();
  const fields = [["state", badge(status.state)], ["task", status.task], ["attempt", status.attempt], ["at", when(status.at)]];
  for (const name of ["error_type", "error", "reason", "result_error"]) if (status[name]) fields.push([name, status[name]]);
  if (status.retry_at) fields.push(["retry at", when(status.retry_at)]);
  $("#task-fields").replaceChildren(...fields.flatMap(([name, value]) => [el("dt", name), value instanceof Node ? wrapDd(value) : el("dd", value ?? "")]));
  $("#task-fields").dataset.state = status.state;
  const result = $("#task-result");
  result.hidden = !("result" in status);
  result.textContent = "result" in status ? JSON.stringify(status.result, null, 2) : "";
  const cancel = $("#cancel");
  cancel.hidden = ["succeeded", "dead", "cancelled"].includes(status.state) || status.state === "unknown";
  cancel.disabled = !state.config?.actions;
  cancel.title = state.config?.actions ? "" : "read-only: start streamproc web with STREAMPROC_WEB_TOKEN";
}

function wrapDd(node) {
  const dd = el("dd");
  dd.append(node);
  return dd;
}

// routing and live updates

function route() {
  const hash = decodeURIComponent(location.hash.slice(1) || "/");
  const [, view, ...rest] = hash.split("/");
  const name = view || "overview";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== name;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  state.taskId = name === "task" ? rest.join("/") : null;
  say("#task-message", "");
  if (state.taskId) loadTask(state.taskId);
  if (name === "dlq") loadDlq();
}

function follow() {
  const live = $("#live");
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live off"; });
  source.addEventListener("overview", (event) => {
    const overview = JSON.parse(event.data);
    renderOverview(overview);
    renderWorkers(overview);
    renderTiers(overview);
    live.title = `updated ${when(overview.at)}`;
    document.body.dataset.updated = overview.at;
    // A dead task comes back when its dead letter is replayed (with its id): only these two are final.
    if (state.taskId && !["succeeded", "cancelled"].includes($("#task-fields").dataset.state)) loadTask(state.taskId);
  });
  source.addEventListener("dlq", () => { if (!$("#dlq").hidden) loadDlq(); });
}

async function start() {
  state.config = await (await fetch("/api/config")).json();
  $("#token-box").hidden = !state.config.actions;
  $("#token").value = localStorage.getItem("streamproc-token") || "";
  $("#token").addEventListener("change", () => localStorage.setItem("streamproc-token", $("#token").value));
  $("#lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#lookup-id").value.trim();
    if (id) location.hash = `#/task/${encodeURIComponent(id)}`;
  });
  $("#cancel").addEventListener("click", async () => {
    try {
      const done = await act(`/api/tasks/${encodeURIComponent(state.taskId)}/cancel`);
      say("#task-message", done.cancelled ? "cancelled: it will not start on any worker" : `not cancelled: it had already ${done.before}`);
    } catch (error) {
      say("#task-message", `cancel failed: ${error.message}`, true);
    }
    loadTask(state.taskId);
  });
  window.addEventListener("hashchange", route);
  route();
  follow();
}

start();
