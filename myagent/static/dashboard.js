// myagent-ws dashboard: a live view of GET /status, refreshed every second.
//
// The turn rate is derived from totals.turns_started: the big number over a sliding window of
// RATE_WINDOW_S (shorter, and labelled so, until the page has seen that much), the chart
// between consecutive polls. The memory and CPU meters are drawn against the server's caps
// (status.limits.max_memory, status.limits.max_cpu; 0 = no cap). With auth on, the token (from
// token.js) goes in an Authorization header; a 401 says how to give one. No build step.

(() => {
  "use strict";

  const POLL_MS = 1000;
  const HISTORY = 120;          // points of the turn-rate chart (one per poll)
  const RATE_WINDOW_S = 120;    // the big number: turns/s over this sliding window
  const NOW_WINDOW_S = 5;       // the sub-line's "now" figure

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };

  const samples = [];           // {t: seconds, started: totals.turns_started}, the last RATE_WINDOW_S
  const rates = [];             // turns/s between consecutive polls
  let failures = 0;

  // Formatting ------------------------------------------------------------------------------

  function bytes(n) {
    if (!n) return "0";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(r).padStart(2, "0") + "s";
    return r + "s";
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 100 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms";
  }

  const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString());
  const sum = (obj) => Object.values(obj || {}).reduce((a, b) => a + b, 0);

  // Rendering -------------------------------------------------------------------------------

  function set(id, text) { $(id).textContent = text; }

  function meter(value, cap, label, showRatio = true) {
    const wrap = el("div", "meter");
    const track = el("div", "track");
    const fill = el("div", "fill");
    const ratio = cap > 0 ? value / cap : 0;
    fill.style.width = Math.max(0, Math.min(100, ratio * 100)).toFixed(1) + "%";
    if (ratio >= 0.9) fill.classList.add("bad");
    else if (ratio >= 0.7) fill.classList.add("warn");
    track.append(fill);
    wrap.append(track, el("span", "txt", label + (cap > 0 && showRatio ? " · " + Math.round(ratio * 100) + "%" : "")));
    return wrap;
  }

  function counts(tableId, obj, empty) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    const entries = Object.entries(obj || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    if (!entries.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.className = "muted";
      cell.textContent = empty;
      return;
    }
    for (const [key, value] of entries) {
      const row = body.insertRow();
      row.insertCell().append(el("code", null, key));
      const cell = row.insertCell();
      cell.className = "num";
      cell.textContent = num(value);
    }
  }

  function chart(values) {
    const max = Math.max(1, ...values);
    const n = values.length;
    const pts = values.map((v, i) => {
      const x = n <= 1 ? 120 : (120 * i) / (n - 1);
      const y = 39 - (37 * v) / max;
      return x.toFixed(2) + "," + y.toFixed(2);
    });
    $("rate-line").setAttribute("points", pts.join(" "));
    $("rate-area").setAttribute("points", pts.length ? "0,40 " + pts.join(" ") + " 120,40" : "");
  }

  // Several agents: the cards count them all (sums; latency: the slowest agent's).
  function addUp(a, b) {
    if (typeof a === "number" || typeof b === "number") return (a || 0) + (b || 0);
    if (!a || !b || typeof a !== "object" || typeof b !== "object") return a === undefined || a === null ? b : a;
    const out = Object.assign({}, a);
    for (const k of Object.keys(b)) out[k] = addUp(a[k], b[k]);
    return out;
  }

  function combined(st) {
    if (!st.agents || st.agents.length < 2) return st;
    const out = Object.assign({}, st, { agent: null, sessions: {}, totals: {}, restarts: {}, latency: {},
                                        outbound_queued_bytes: 0 });
    for (const a of st.agents) {
      for (const key of ["sessions", "totals", "restarts"]) out[key] = addUp(out[key], a[key] || {});
      out.outbound_queued_bytes += a.outbound_queued_bytes || 0;
      for (const [k, v] of Object.entries(a.latency || {})) {
        if (v !== null && v !== undefined) out.latency[k] = k === "samples" ? (out.latency[k] || 0) + v : Math.max(out.latency[k] || 0, v);
      }
    }
    out.restarts.unavailable_reason = null;  // the banner names each agent
    return out;
  }

  function render(full) {
    const st = combined(full);
    const limits = st.limits || {};
    const sessions = st.sessions || {};
    const totals = st.totals || {};
    const latency = st.latency || {};
    const restarts = st.restarts || {};

    const title = st.agents && st.agents.length > 1 ? st.agents.length + " agents" : (st.agent && st.agent.name);
    set("agent-name", title || "myagent-ws");
    set("version", "myagent-ws " + st.version + (st.agent && st.agent.file ? " · " + st.agent.file : ""));
    document.title = (title || "myagent-ws") + " · dashboard";
    $("ready-dot").className = "dot " + (st.ready ? "ok" : st.draining ? "warn" : "bad");
    set("ready-text", st.ready ? "ready" : "not ready: " + st.ready_reason);
    const banner = $("banner");
    const down = (full.agents && full.agents.length > 1 ? full.agents : [full]).filter((a) => (a.restarts || {}).unavailable_reason);
    banner.hidden = !down.length;
    banner.textContent = down.map((a) => "Agent " + (a.name ? a.name + " " : "") + "unavailable: " + a.restarts.unavailable_reason).join(" · ");

    set("c-connections", num(st.connections));
    set("c-connections-sub", num(totals.connections_opened) + " opened · " + bytes(st.outbound_queued_bytes || 0) + " queued");
    set("c-sessions", num(sessions.total));
    set("c-sessions-sub", num(sessions.active) + " active · " + num(sessions.detached) + " detached");
    set("c-running", num(sessions.turns_running));
    set("c-running-sub", num(totals.turns_started) + " started · " + num(sum(totals.turns_ended)) + " ended");

    turnRate(totals.turns_started || 0);

    set("c-latency", ms(latency.turn_p50_ms));
    set("c-latency-sub", "p50 · p99 " + ms(latency.turn_p99_ms) + " · " + num(latency.samples) + " samples");
    set("c-first", ms(latency.first_event_p50_ms));
    set("c-first-sub", "p50 · p99 " + ms(latency.first_event_p99_ms));
    set("c-restarts", num(restarts.total));
    set("c-restarts-sub", num(restarts.recent) + " in the current window");
    set("uptime", "up " + duration(st.uptime_seconds) + ((st.reload || {}).reloads ? " · " + st.reload.reloads + " reload(s)" : ""));

    set("limits", st.agents && st.agents.length > 1 ? "" : limitsText(limits));

    // Sandboxes grouped by agent (one heading row per agent when the server serves several).
    const body = $("sandboxes").tBodies[0];
    body.replaceChildren();
    const sections = st.agents && st.agents.length ? st.agents : [st];
    const several = sections.length > 1;
    for (const section of sections) {
      if (several) {
        const head = body.insertRow();
        head.className = "agent-group";
        const c = head.insertCell();
        c.colSpan = 10;
        c.append(el("strong", null, section.name), " " + section.path + " · " + ((section.agent || {}).name || "") + " · ",
                 el("span", "state " + (section.ready ? "ready" : "dead"), section.ready ? "ready" : section.ready_reason),
                 el("span", "muted", " · " + limitsText(section.limits || {})));
      }
      sandboxRows(body, section);
    }
    counts("t-ended", totals.turns_ended, "no turn yet");
    counts("t-errors", totals.errors_by_code, "no errors");
    counts("t-restarts", restarts.by_reason, "no restarts");
    counts("t-refused", totals.connections_refused, "none refused");
  }

  function limitsText(limits) {
    return (limits.workers || 0) + " workers · " + num(limits.sessions_per_worker) + " sessions each · max memory " +
      (limits.max_memory ? bytes(limits.max_memory) : "off") + " · max CPU " + (limits.max_cpu ? limits.max_cpu + "%" : "off");
  }

  function sandboxRows(body, section) {
    const limits = section.limits || {};
    const sandboxes = (section.sandboxes || []).slice().sort((a, b) => a.id - b.id);
    for (const sb of sandboxes) {
      const row = body.insertRow();
      row.className = "sandbox";
      if (section.name) row.dataset.agent = section.name;
      const cell = (content, cls) => {
        const c = row.insertCell();
        if (cls) c.className = cls;
        if (content instanceof Node) c.append(content); else c.textContent = content;
        return c;
      };
      cell(String(sb.id), "num");
      cell(String(sb.pid), "num");
      cell(el("span", "state " + sb.state, sb.state));
      cell(meter(sb.sessions, limits.sessions_per_worker || 0, num(sb.sessions) + " / " + num(limits.sessions_per_worker)));
      cell(meter(sb.rss_bytes, limits.max_memory || 0, bytes(sb.rss_bytes) + (limits.max_memory ? " / " + bytes(limits.max_memory) : "")));
      // No CPU cap: the bar shows percent of one core.
      cell(meter(sb.cpu_percent, limits.max_cpu || 100, sb.cpu_percent.toFixed(1) + "%" + (limits.max_cpu ? " / " + limits.max_cpu + "%" : ""), !!limits.max_cpu));
      cell(num(sb.turns_served), "num");
      cell(duration(sb.uptime_seconds), "num");
      cell(sb.heartbeat_age_seconds.toFixed(1) + " s", "num");
      cell(sb.kill_reason || "", "muted");
    }
    if (!sandboxes.length) {
      const row = body.insertRow();
      const c = row.insertCell();
      c.colSpan = 10;
      c.className = "muted";
      c.textContent = "No sandbox is running.";
    }
  }

  // Turns started per second over the last RATE_WINDOW_S, from the first and last samples in it.
  function turnRate(started) {
    const now = performance.now() / 1000;
    const prev = samples[samples.length - 1];
    if (prev && started < prev.started) { samples.length = 0; rates.length = 0; }  // the server restarted
    else if (prev && now > prev.t) rates.push((started - prev.started) / (now - prev.t));
    samples.push({ t: now, started: started });
    while (now - samples[0].t > RATE_WINDOW_S + 0.5) samples.shift();
    while (rates.length > HISTORY) rates.shift();
    chart(rates);
    const first = samples[0];
    if (samples.length < 2) {  // one sample: no rate yet
      set("c-rate", "–");
      set("c-rate-sub", "turns started per second: measuring…");
      return;
    }
    // The oldest earlier sample inside a window (the previous one if polls were throttled).
    const since = (seconds) => samples.slice(0, -1).find((x) => now - x.t <= seconds + 0.5) || samples[samples.length - 2];
    const over = (from) => (now > from.t ? (started - from.started) / (now - from.t) : 0);
    const rate = over(first), recent = over(since(NOW_WINDOW_S));
    const fmt = (r) => r.toFixed(r >= 10 ? 0 : r > 0 && r < 0.1 ? 2 : 1) + " /s";
    set("c-rate", fmt(rate));
    const span = now - first.t;
    set("c-rate-sub", (span >= RATE_WINDOW_S - 1.5
      ? "turns started per second, last " + RATE_WINDOW_S / 60 + " min"
      : "turns started per second, last " + Math.round(span) + " s (all this page has seen)") +
      " · " + fmt(recent) + " in the last " + NOW_WINDOW_S + " s");
  }

  function needsToken(status) {
    const banner = $("banner");
    banner.replaceChildren(window.myagentToken.hint(status, "dashboard"));
    banner.hidden = false;
  }

  async function poll() {
    try {
      const resp = await fetch("status", { cache: "no-store", headers: window.myagentToken.headers() });
      if (resp.status === 401) needsToken(resp.status);
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      failures = 0;
      set("updated", "updated " + new Date().toLocaleTimeString());
    } catch (err) {
      failures++;
      $("ready-dot").className = "dot bad";
      set("ready-text", "unreachable (" + (err && err.message ? err.message : "error") + ")");
      set("updated", failures + " failed poll(s)");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", poll);
})();
