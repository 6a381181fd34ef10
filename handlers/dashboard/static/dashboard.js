// agentledger dashboard: plain JavaScript, no build step, no framework.
//
// Everything shown comes from the server as JSON and is put on the page with
// textContent / createElement only (prompts and outputs are user input): never
// innerHTML. Mermaid diagrams are drawn by the vendored bundle and shown as an <img> of
// the SVG it returns, so nothing in a diagram can run as script either.
//
// Live updates arrive on one EventSource (/events): `state` (the whole board), then
// `run`, `agent`, `graph` and `alert` upserts as the event relay publishes events.
// window.__dashboardRenders records when each run was first shown in each status
// (Date.now()), for the browser test and bench/dashboard.py.
"use strict";

(() => {
  // The token query signs the browser in (the answer set a cookie): take it out of the
  // address bar and the history at once.
  if (new URLSearchParams(window.location.search).has("token")) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  const MAX_RUN_ROWS = 100;
  const MAX_KNOWN_RUNS = 3000;
  const MAX_RENDERS = 200000;
  const PREVIEW = 240;

  const runs = new Map();      // run_id -> row
  const agents = new Map();    // agent -> figures
  const graphs = new Map();    // run_id -> row
  const alerts = new Map();    // alert_id -> row
  const shownStatus = new Map(); // run_id -> status last shown
  const finishedAt = [];       // Date.now() of runs seen finishing live (throughput)
  window.__dashboardRenders = [];
  window.__dashboardEvents = 0;

  let selectedRun = null;
  let selectedGraph = null;
  let dirty = { runs: false, agents: false, graphs: false, alerts: false };
  let renderScheduled = false;
  let received = 0;
  let lastEventAt = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, options, ...children) {
    const node = document.createElement(tag);
    if (options) {
      if (options.className) node.className = options.className;
      if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
      if (options.title) node.title = options.title;
      if (options.data) for (const [k, v] of Object.entries(options.data)) node.dataset[k] = v;
    }
    for (const child of children) if (child) node.appendChild(child);
    return node;
  }

  function cut(value, limit = PREVIEW) {
    if (value === null || value === undefined) return "";
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
  }

  const fmt = {
    int: (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en")),
    ms: (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(1)),
    rate: (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %"),
    cost: (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(6)),
    time: (v) => (v ? String(v).slice(11, 23) : "-"),
    stamp: (v) => (v ? String(v).slice(0, 19).replace("T", " ") : "-"),
    num: (v) => (v === null || v === undefined ? "-" : Number(v).toPrecision(4)),
  };

  function statusBadge(status) {
    return el("span", { className: "status status-" + status, text: status });
  }

  // -- live feed ---------------------------------------------------------------------

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("open", () => setConnection("live", "pill-live"));
    source.addEventListener("error", () => setConnection("reconnecting", "pill-wait"));
    source.addEventListener("state", (e) => {
      const state = JSON.parse(e.data);
      runs.clear(); agents.clear(); graphs.clear(); alerts.clear();
      for (const a of state.agents) agents.set(a.agent, a);
      for (const r of state.runs) runs.set(r.run_id, r);
      for (const g of state.graphs) graphs.set(g.run_id, g);
      for (const a of state.alerts) alerts.set(a.alert_id, a);
      markAll();
    });
    source.addEventListener("run", (e) => {
      const row = JSON.parse(e.data);
      const before = runs.get(row.run_id);
      if (row.finished_at && (!before || !before.finished_at)) finishedAt.push(Date.now());
      runs.set(row.run_id, row);
      trimRuns();
      counted("runs");
    });
    source.addEventListener("agent", (e) => {
      const figures = JSON.parse(e.data);
      agents.set(figures.agent, figures);
      counted("agents");
    });
    source.addEventListener("graph", (e) => {
      const row = JSON.parse(e.data);
      graphs.set(row.run_id, row);
      counted("graphs");
    });
    source.addEventListener("alert", (e) => {
      const row = JSON.parse(e.data);
      alerts.set(row.alert_id, row);
      counted("alerts");
    });
  }

  function setConnection(text, cls) {
    const pill = $("connection");
    pill.textContent = text;
    pill.className = "pill " + cls;
  }

  function counted(part) {
    received += 1;
    window.__dashboardEvents = received;
    lastEventAt = new Date();
    dirty[part] = true;
    schedule();
  }

  function markAll() {
    dirty = { runs: true, agents: true, graphs: true, alerts: true };
    schedule();
  }

  function schedule() {
    if (renderScheduled) return;
    renderScheduled = true;
    const run = () => { renderScheduled = false; render(); };
    if (document.hidden) setTimeout(run, 100);
    else requestAnimationFrame(run);
  }

  function trimRuns() {
    if (runs.size <= MAX_KNOWN_RUNS) return;
    const oldest = [...runs.values()].sort((a, b) => cmp(a.requested_at, b.requested_at));
    for (const row of oldest.slice(0, runs.size - MAX_KNOWN_RUNS)) {
      if (row.run_id !== selectedRun) runs.delete(row.run_id);
    }
  }

  function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  // -- rendering -----------------------------------------------------------------------

  function render() {
    if (dirty.agents) renderAgents();
    if (dirty.runs) renderRuns();
    if (dirty.graphs) renderGraphs();
    if (dirty.alerts) renderAlerts();
    dirty = { runs: false, agents: false, graphs: false, alerts: false };
    $("feed-info").textContent = received
      ? `${received.toLocaleString("en")} updates · last ${lastEventAt.toISOString().slice(11, 19)} UTC`
      : "waiting for events";
  }

  function renderAgents() {
    const body = $("agents").tBodies[0];
    const rows = [...agents.values()].sort((a, b) => cmp(a.agent, b.agent));
    body.replaceChildren(...rows.map((m) => el("tr", { data: { agent: m.agent } },
      el("td", { text: m.agent, className: "mono" }),
      el("td", { text: fmt.int(m.runs), className: "num" }),
      el("td", { text: fmt.int(m.running), className: "num" }),
      el("td", { text: fmt.int(m.completed), className: "num" }),
      el("td", { text: fmt.int(m.failed), className: "num" }),
      el("td", { text: fmt.int(m.rejected), className: "num" }),
      el("td", { text: fmt.rate(m.failure_rate), className: "num" }),
      el("td", { text: fmt.ms(m.latency_p50_ms), className: "num" }),
      el("td", { text: fmt.ms(m.latency_p95_ms), className: "num" }),
      el("td", { text: fmt.ms(m.latency_p99_ms), className: "num" }),
      el("td", { text: `${fmt.int(m.input_tokens)} / ${fmt.int(m.output_tokens)}`, className: "num" }),
      el("td", { text: fmt.int(m.tool_calls), className: "num" }),
      el("td", { text: fmt.cost(m.cost_usd), className: "num" }),
    )));
    $("agents-empty").hidden = rows.length > 0;
    const select = $("filter-agent");
    const chosen = select.value;
    const names = rows.map((m) => m.agent);
    if (select.options.length - 1 !== names.length) {
      select.replaceChildren(el("option", { text: "all" }), ...names.map((n) => el("option", { text: n })));
      select.options[0].value = "";
      select.value = names.includes(chosen) ? chosen : "";
    }
  }

  function filtered() {
    const agent = $("filter-agent").value;
    const status = $("filter-status").value;
    return [...runs.values()]
      .filter((r) => (!agent || r.agent === agent) && (!status || r.status === status))
      .sort((a, b) => cmp(b.requested_at, a.requested_at) || cmp(b.run_id, a.run_id))
      .slice(0, MAX_RUN_ROWS);
  }

  function renderRuns() {
    const body = $("runs").tBodies[0];
    const shown = filtered();
    const now = Date.now();
    body.replaceChildren(...shown.map((r) => {
      const fresh = shownStatus.get(r.run_id) !== r.status;
      if (fresh) {
        shownStatus.set(r.run_id, r.status);
        if (window.__dashboardRenders.length < MAX_RENDERS) {
          window.__dashboardRenders.push({
            run_id: r.run_id, task_id: r.task_id, status: r.status,
            committed_at: r.committed_at, shown_at: now,
          });
        }
      }
      const detail = r.error_kind ? `${r.error_kind}: ${r.error_message || ""}` : cut(r.output);
      const row = el("tr", { className: fresh ? "fresh" : "", data: { runId: r.run_id, taskId: r.task_id || "" } },
        el("td", { text: fmt.time(r.requested_at), className: "mono" }),
        el("td", { text: r.task_id || "-", className: "mono text" }),
        el("td", { text: r.agent || "-" }),
        el("td", {}, statusBadge(r.status)),
        el("td", { text: cut(r.prompt), className: "text", data: { field: "prompt" } }),
        el("td", { text: cut(detail), className: "text" + (r.error_kind ? " error" : "") }),
        el("td", { text: fmt.ms(r.duration_ms), className: "num" }),
      );
      if (r.run_id === selectedRun) row.classList.add("selected");
      row.addEventListener("click", () => openRun(r.run_id));
      return row;
    }));
    $("runs-count").textContent = `${shown.length} shown`;
    if (selectedRun && runs.has(selectedRun)) {
      const r = runs.get(selectedRun);
      const badge = $("detail-status");
      badge.textContent = r.status;
      badge.className = "status status-" + r.status;
    }
  }

  function renderGraphs() {
    const body = $("graphs").tBodies[0];
    const rows = [...graphs.values()].sort((a, b) => cmp(b.started_at, a.started_at)).slice(0, 50);
    body.replaceChildren(...rows.map((g) => {
      const row = el("tr", { data: { runId: g.run_id } },
        el("td", { text: fmt.time(g.started_at), className: "mono" }),
        el("td", { text: g.task_id, className: "mono text" }),
        el("td", { text: g.graph + (g.workflow ? " (workflow)" : "") }),
        el("td", {}, statusBadge(g.status)),
        el("td", { text: g.current_node || "-" }),
        el("td", { text: fmt.int(g.steps), className: "num" }),
        el("td", { text: fmt.ms(g.duration_ms), className: "num" }),
      );
      if (g.run_id === selectedGraph) row.classList.add("selected");
      row.addEventListener("click", () => openGraph(g.run_id));
      return row;
    }));
    $("graphs-empty").hidden = rows.length > 0;
  }

  function renderAlerts() {
    const all = [...alerts.values()].sort((a, b) => cmp(b.changed_at, a.changed_at));
    const active = all.filter((a) => a.state === "raised");
    $("alerts-active").replaceChildren(...active.map((a) => el("div", { className: "alert-card", data: { alertId: a.alert_id, rule: a.rule } },
      el("strong", { text: `${a.rule}` }),
      el("span", { text: ` · ${a.agent} · ${a.metric} over ${a.window}: ${fmt.num(a.value)} > ${fmt.num(a.threshold)} (${a.samples} runs) since ${fmt.stamp(a.raised_at)} UTC` }),
    )));
    $("alerts-none").hidden = active.length > 0;
    $("alerts-recent").tBodies[0].replaceChildren(...all.slice(0, 20).map((a) => el("tr", { data: { alertId: a.alert_id } },
      el("td", {}, statusBadge(a.state)),
      el("td", { text: a.rule, className: "mono" }),
      el("td", { text: a.agent }),
      el("td", { text: a.metric || "-" }),
      el("td", { text: fmt.num(a.value), className: "num" }),
      el("td", { text: fmt.num(a.threshold), className: "num" }),
      el("td", { text: fmt.stamp(a.changed_at), className: "mono" }),
    )));
  }

  // -- run detail ----------------------------------------------------------------------

  async function getJson(url, options) {
    const response = await fetch(url, { credentials: "same-origin", ...options });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  async function openRun(runId) {
    selectedRun = runId;
    dirty.runs = true; schedule();
    const section = $("run-detail");
    section.hidden = false;
    $("detail-title").textContent = runId;
    $("replay-result").textContent = "";
    $("replay-result").className = "";
    $("replay-diff").hidden = true;
    $("timeline").tBodies[0].replaceChildren(el("tr", {}, el("td", { text: "loading…", className: "muted" })));
    try {
      const found = await getJson(`/api/runs/${encodeURIComponent(runId)}`);
      if (selectedRun !== runId) return;
      showTimeline(found);
    } catch (e) {
      $("timeline").tBodies[0].replaceChildren(el("tr", {}, el("td", { text: String(e.message), className: "error" })));
    }
  }

  function showTimeline(found) {
    const view = found.view || {};
    const title = view.task_id ? `${view.task_id} (${found.kind}, ${found.id})` : `${found.id} (${found.kind})`;
    $("detail-title").textContent = title;
    const status = view.status || "-";
    const badge = $("detail-status");
    badge.textContent = status;
    badge.className = "status status-" + status;
    $("replay").hidden = !found.replayable;
    $("detail-prompt").textContent = view.prompt !== undefined && view.prompt !== null ? view.prompt : (view.graph ? `graph ${view.graph}` : "-");
    const output = view.error_message ? `${view.error_kind}: ${view.error_message}` :
      (view.output === undefined || view.output === null ? "-" :
        (typeof view.output === "string" ? view.output : JSON.stringify(view.output, null, 2)));
    $("detail-output").textContent = output;
    const rows = [];
    for (const event of found.events) {
      const detailCell = el("td", {}, el("div", { text: event.summary }));
      if (event.data !== null) {
        const details = el("details", {}, el("summary", { text: "data" }), el("pre", { text: JSON.stringify(event.data, null, 2) }));
        detailCell.appendChild(details);
      } else {
        detailCell.appendChild(el("div", { className: "muted", text: `data: ${event.data_bytes.toLocaleString("en")} bytes, not shown (agentledger events --json)` }));
      }
      rows.push(el("tr", { data: { event: event.name } },
        el("td", { text: event.version, className: "num" }),
        el("td", { text: fmt.time(event.timestamp), className: "mono" }),
        el("td", { text: event.name, className: "mono" }),
        detailCell,
      ));
    }
    if (found.truncated) rows.push(el("tr", {}, el("td", { text: "… more events (see agentledger events)", className: "muted" })));
    $("timeline").tBodies[0].replaceChildren(...rows);
  }

  async function replay() {
    if (!selectedRun) return;
    const button = $("replay");
    const result = $("replay-result");
    const diff = $("replay-diff");
    button.disabled = true;
    result.className = "muted";
    result.textContent = "replaying…";
    diff.hidden = true;
    try {
      const report = await getJson(`/api/runs/${encodeURIComponent(selectedRun)}/replay`, { method: "POST" });
      result.className = "verdict-" + report.verdict;
      const divergence = report.divergence;
      if (!divergence) {
        result.textContent = report.verdict + (report.note ? `  (${report.note})` : "");
      } else {
        result.textContent = divergence.summary || report.verdict;
        const lines = divergence.diff || [];
        if (lines.length) { diff.textContent = lines.join("\n"); diff.hidden = false; }
      }
    } catch (e) {
      result.className = "error";
      result.textContent = String(e.message);
    } finally {
      button.disabled = false;
    }
  }

  // -- graphs and Mermaid ------------------------------------------------------------

  let mermaidLoading = null;

  function loadMermaid() {
    if (mermaidLoading) return mermaidLoading;
    mermaidLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/static/mermaid.min.js";
      script.onload = () => {
        window.mermaid.initialize({
          startOnLoad: false, securityLevel: "strict", theme: "neutral",
          htmlLabels: false, flowchart: { htmlLabels: false },
        });
        resolve(window.mermaid);
      };
      script.onerror = () => reject(new Error("the Mermaid bundle did not load"));
      document.head.appendChild(script);
    });
    return mermaidLoading;
  }

  let diagramCount = 0;

  async function drawMermaid(source, container) {
    container.replaceChildren(el("span", { className: "muted", text: "drawing…" }));
    try {
      const mermaid = await loadMermaid();
      diagramCount += 1;
      const { svg } = await mermaid.render(`mermaid-${diagramCount}`, source);
      // Shown as an image: an SVG in an <img> runs no script and reaches nothing.
      const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
      const root = doc.documentElement;
      const box = (root.getAttribute("viewBox") || "").split(/\s+/).map(Number);
      if (box.length === 4 && box[2] > 0) {
        root.setAttribute("width", String(Math.ceil(box[2])));
        root.setAttribute("height", String(Math.ceil(box[3])));
        root.removeAttribute("style");
      }
      const blob = new Blob([new XMLSerializer().serializeToString(root)], { type: "image/svg+xml" });
      const img = el("img");
      img.alt = "diagram";
      img.src = URL.createObjectURL(blob);
      container.replaceChildren(img);
    } catch (e) {
      container.replaceChildren(el("span", { className: "error", text: `diagram not drawn: ${e.message}; its Mermaid source is below` }));
    }
  }

  async function openGraph(runId) {
    selectedGraph = runId;
    dirty.graphs = true; schedule();
    $("graph-detail").hidden = false;
    $("graph-title").textContent = runId;
    $("graph-problem").textContent = "loading…";
    $("graph-diagram").replaceChildren();
    $("graph-source").textContent = "";
    $("sequence-block").hidden = true;
    try {
      const found = await getJson(`/api/graphs/${encodeURIComponent(runId)}`);
      if (selectedGraph !== runId) return;
      const view = found.view;
      $("graph-title").textContent = `${view.task_id} (${view.graph}, ${view.status}; path ${view.path.join(" → ") || "-"})`;
      $("graph-problem").textContent = found.mermaid_problem || "";
      if (found.mermaid) {
        $("graph-source").textContent = found.mermaid;
        drawMermaid(found.mermaid, $("graph-diagram"));
      }
      if (found.sequence) {
        $("sequence-block").hidden = false;
        $("sequence-source").textContent = found.sequence;
        drawMermaid(found.sequence, $("sequence-diagram"));
      }
    } catch (e) {
      $("graph-problem").textContent = String(e.message);
    }
  }

  // -- evaluations -------------------------------------------------------------------

  async function loadEvaluations() {
    const note = $("evaluations-note");
    const body = $("evaluations").tBodies[0];
    try {
      const found = await getJson("/api/evaluations");
      note.textContent = found.rows.length ? "" : "No evaluations yet.";
      body.replaceChildren(...found.rows.map((r) => {
        const link = r.report_url ? el("a", { text: "report" }) : el("span", { text: "-" });
        if (r.report_url) { link.href = r.report_url; link.target = "_blank"; link.rel = "noopener noreferrer"; }
        return el("tr", {},
          el("td", { text: r.task_id, className: "mono" }),
          el("td", { text: r.label ? `${r.dataset} (${r.label})` : r.dataset }),
          el("td", {}, statusBadge(String(r.status))),
          el("td", { text: `${fmt.int(r.passed)}/${fmt.int(r.cases)}`, className: "num" }),
          el("td", { text: `${(100 * Number(r.pass_rate)).toFixed(1)} %`, className: "num" }),
          el("td", { text: r.thresholds_met === null ? "-" : (r.thresholds_met ? "met" : "missed") }),
          el("td", { text: fmt.stamp(r.finished_at), className: "mono" }),
          el("td", {}, link),
        );
      }));
    } catch (e) {
      note.textContent = `evaluations: ${e.message}`;
    }
  }

  // -- filters: older runs from the runs view ------------------------------------------

  async function filterChanged() {
    dirty.runs = true; schedule();
    const params = new URLSearchParams();
    const agent = $("filter-agent").value;
    const status = $("filter-status").value;
    if (agent) params.set("agent", agent);
    if (status) params.set("status", status);
    params.set("limit", String(MAX_RUN_ROWS));
    try {
      const rows = await getJson(`/api/runs?${params}`);
      for (const r of rows) {
        if (runs.has(r.run_id)) continue;  // the live row is as new or newer
        runs.set(r.run_id, {
          run_id: r.run_id, task_id: r.task_id, agent: r.agent, session_id: r.session_id,
          status: r.status, prompt: cut(r.prompt), output: cut(r.output),
          error_kind: r.error_kind, error_message: cut(r.error_message),
          requested_at: r.requested_at, finished_at: r.finished_at, duration_ms: r.duration_ms,
          committed_at: null,
        });
      }
      trimRuns();
      dirty.runs = true; schedule();
    } catch (e) {
      $("runs-count").textContent = `runs: ${e.message}`;
    }
  }

  // -- throughput sparkline ------------------------------------------------------------

  function drawThroughput() {
    const canvas = $("throughput");
    const ctx = canvas.getContext("2d");
    const now = Date.now();
    const seconds = 120;
    while (finishedAt.length && finishedAt[0] < now - seconds * 1000) finishedAt.shift();
    const bins = new Array(seconds).fill(0);
    for (const t of finishedAt) {
      const i = seconds - 1 - Math.floor((now - t) / 1000);
      if (i >= 0 && i < seconds) bins[i] += 1;
    }
    const peak = Math.max(1, ...bins);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#7bd88f";
    const w = canvas.width / seconds;
    bins.forEach((n, i) => {
      const h = (n / peak) * (canvas.height - 2);
      ctx.fillRect(i * w, canvas.height - h, Math.max(1, w - 0.5), h);
    });
    const last = bins.slice(-10).reduce((a, b) => a + b, 0) / 10;
    $("throughput-label").textContent = `${last.toFixed(1)} runs/s finished (10 s)`;
  }

  // -- start ---------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("replay").addEventListener("click", replay);
    $("detail-close").addEventListener("click", () => {
      selectedRun = null; $("run-detail").hidden = true; dirty.runs = true; schedule();
    });
    $("filter-agent").addEventListener("change", filterChanged);
    $("filter-status").addEventListener("change", filterChanged);
    $("run-filters").addEventListener("submit", (e) => e.preventDefault());
    $("evaluations-refresh").addEventListener("click", loadEvaluations);
    connect();
    loadEvaluations();
    setInterval(drawThroughput, 1000);
    setInterval(() => { if (received) render(); }, 5000);
  });
})();
