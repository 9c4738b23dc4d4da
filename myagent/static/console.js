// myagent-ws browser console: talk to the agent served by this server.
//
// One WebSocket to this page's own origin (the token, from token.js, goes in its ?token=:
// browsers cannot set headers on a WebSocket; the Dashboard link hands it on in its fragment).
// One session at a time. The conversation is a list of items (user message, the model's
// reasoning, assistant answer, tool step, confirmation, notice) kept in sessionStorage together
// with the session id, its resume token and the last seq seen, so a dropped connection or a
// page reload resumes the session with user.reconnect and replays only what was missed. Events
// are deduplicated by seq. Answers are Markdown, rendered by markdown.js (vendored markdown-it);
// everything else is set as text. No build step.

(() => {
  "use strict";

  // The agent this tab talks to (?agent=NAME; the picker sets it): its own WebSocket path and its
  // own saved conversation. Empty: the server's only agent, at the page's own path.
  const AGENT = new URLSearchParams(location.search).get("agent") || "";
  const STORE_KEY = "myagent-ws.console.v1" + (AGENT ? ":" + AGENT : "");
  const MAX_ITEMS = 400;            // items kept in sessionStorage (oldest dropped)
  const ACK_EVERY_MS = 1000;        // user.ack cadence: lets the server trim its replay buffer
  const RECONNECT_MIN_MS = 300;
  const RECONNECT_MAX_MS = 5000;
  const STREAM_RENDER_MS = 80;      // a streaming answer is re-rendered at most this often...
  const STREAM_RENDER_SHARE = 4;    // ...and at most 1/4 of the time: each is a full Markdown pass

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };

  // State ---------------------------------------------------------------------------------

  const fresh = () => ({ sessionId: null, resumeToken: null, lastSeq: 0, running: false,
                         agent: null, items: [], nextId: 1 });
  let state = load() || fresh();
  let ws = null;
  let connected = false;        // system.connected received on the current socket
  let sessionReady = false;     // the session is created or resumed on the current socket
  let ackedSeq = 0;
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer = null;
  let authRefused = null;       // null: not asked; true: /status said 401 (see checkAuth)
  let saveTimer = null;
  let thinking = null;          // transient "thinking…" line of the running turn
  const views = new Map();      // item id -> DOM node
  const dirty = new Set();      // streaming items waiting for their next render
  let flushTimer = null;
  let renderCost = 0;           // ms the last of those renders took

  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      return saved && Array.isArray(saved.items) ? saved : null;
    } catch (err) {
      return null;
    }
  }

  function save() {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (state.items.length > MAX_ITEMS) state.items.splice(0, state.items.length - MAX_ITEMS);
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (err) { /* storage full or disabled: the live page still works */ }
  }

  function saveSoon() {
    if (!saveTimer) saveTimer = setTimeout(save, 250);
  }

  function addItem(item, before) {
    item.id = state.nextId++;
    const at = before ? state.items.indexOf(before) : -1;
    if (at >= 0) state.items.splice(at, 0, item); else state.items.push(item);
    renderItem(item, at >= 0 ? views.get(before.id) : null);
    saveSoon();
    return item;
  }

  function changed(item) {
    renderItem(item);
    saveSoon();
  }

  // A delta of a streaming answer: rendered together with the next ones (they come in bursts),
  // at most every STREAM_RENDER_MS, and less often when a render is slow (a long answer).
  function changedLater(item) {
    dirty.add(item);
    saveSoon();
    if (!flushTimer) flushTimer = setTimeout(flush, Math.max(STREAM_RENDER_MS, renderCost * STREAM_RENDER_SHARE));
  }

  function flush() {
    flushTimer = null;
    const started = performance.now();
    for (const item of [...dirty]) renderItem(item);  // takes it off the set
    renderCost = performance.now() - started;
  }

  const findItem = (pred) => { for (let i = state.items.length - 1; i >= 0; i--) if (pred(state.items[i])) return state.items[i]; return null; };

  // Connection ----------------------------------------------------------------------------

  function wsUrl() {
    const token = window.myagentToken.value;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = location.pathname.replace(/[^/]*$/, "");  // the directory this page is served from
    return scheme + "//" + location.host + path + encodeURIComponent(AGENT) +
      (token ? "?token=" + encodeURIComponent(token) : "");
  }

  // Agents --------------------------------------------------------------------------------

  // GET agents lists what the server serves. Several: a picker in the header, and a page
  // without ?agent= opens the first. The socket opens once this is settled (a server without
  // /agents, or that refuses it, serves one agent: connect as before).
  function pickAgent(then) {
    const token = new URLSearchParams(location.search).get("token");
    fetch("agents" + (token ? "?token=" + encodeURIComponent(token) : ""), { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        const agents = (doc && Array.isArray(doc.agents)) ? doc.agents : [];
        if (agents.length < 2) return then();
        if (!AGENT || !agents.some((a) => a.name === AGENT)) return openAgent(agents[0].name, true);
        const picker = el("select", "agent-picker");
        picker.id = "agent-picker";
        picker.title = "Agent";
        for (const a of agents) {
          const option = el("option", null, a.name + (a.agent_name && a.agent_name !== a.name ? " (" + a.agent_name + ")" : ""));
          option.value = a.name;
          option.selected = a.name === AGENT;
          picker.appendChild(option);
        }
        picker.addEventListener("change", () => openAgent(picker.value, false));
        document.querySelector("header nav").prepend(picker);
        then();
      })
      .catch(() => then());
  }

  function openAgent(name, replace) {
    const params = new URLSearchParams(location.search);
    params.set("agent", name);
    const url = location.pathname + "?" + params.toString();
    if (replace) location.replace(url); else location.assign(url);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    setConn("warn", state.sessionId ? "reconnecting…" : "connecting…");
    const socket = new WebSocket(wsUrl());
    ws = socket;
    window.__ws = socket;  // for tests and debugging: window.__ws.close() simulates a drop
    connected = false;
    sessionReady = false;
    socket.onmessage = (msg) => {
      if (socket !== ws) return;
      let event;
      try { event = JSON.parse(msg.data); } catch (err) { return; }
      onEvent(event);
    };
    socket.onclose = (ev) => {
      if (socket !== ws) return;
      connected = false;
      sessionReady = false;
      updateControls();
      const why = ev.code === 1008 ? " (refused: " + (ev.reason || "policy") + ")"
        : authRefused ? " (HTTP 401: " + (window.myagentToken.value ? "token refused" : "token needed") + ")" : "";
      setConn("bad", "disconnected" + why + " — retrying in " + (reconnectDelay / 1000).toFixed(1) + "s");
      if (!state.sessionId && authRefused === null) checkAuth();
      reconnectTimer = setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
    };
  }

  // A browser does not see why a WebSocket was refused: ask /status, which answers 401 too
  // when this server wants a (valid) token, and say how to give one. Once per page.
  function checkAuth() {
    authRefused = false;
    fetch("status", { cache: "no-store", headers: window.myagentToken.headers() }).then((resp) => {
      if (resp.status !== 401 || connected) return;
      authRefused = true;
      addItem({ kind: "notice", level: "error", text: window.myagentToken.hint(resp.status, "").textContent });
    }).catch(() => { /* unreachable: the retry line says so */ });
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function setConn(kind, text) {
    $("conn-dot").className = "dot " + kind;
    $("conn-text").textContent = text;
  }

  function startSession(keepItems) {
    const previous = state;
    state = Object.assign(fresh(), { agent: previous.agent });
    if (keepItems) Object.assign(state, { items: previous.items, nextId: previous.nextId });
    renderAll();
    save();
    send({ event: "user.create_session" });
  }

  // Events --------------------------------------------------------------------------------

  function onEvent(ev) {
    const name = ev.event;
    const meta = ev.metadata || {};
    if (name === "system.heartbeat") return;
    if (name === "system.connected") {
      connected = true;
      reconnectDelay = RECONNECT_MIN_MS;
      if (meta.agent_name && !state.agent) state.agent = { name: meta.agent_name };
      renderHeader();
      if (state.sessionId) {
        send({ event: "user.reconnect", session_id: state.sessionId,
               content: { resume_token: state.resumeToken, last_seq: state.lastSeq } });
      } else {
        startSession();
      }
      return;
    }
    if (name === "agent.session_created") {
      if (state.sessionId && ev.session_id !== state.sessionId) return;
      state.sessionId = ev.session_id;
      state.resumeToken = meta.resume_token;
      state.lastSeq = ev.seq || 0;
      ackedSeq = 0;
      state.agent = { name: meta.agent_name, description: meta.agent_description || "",
                      tools: (meta.tools || []).map((t) => t.name) };
      sessionReady = true;
      setConn("ok", "connected");
      renderHeader();
      renderAll();
      save();
      updateControls();
      return;
    }
    if (typeof ev.seq === "number") {
      if (ev.session_id !== state.sessionId) return;  // an old session's late event
      if (ev.seq <= state.lastSeq) return;            // already shown: replayed twice
      state.lastSeq = ev.seq;
    }
    if (meta.turn_id && name !== "agent.message_queued") {
      // The first event of a queued message's turn: it runs now.
      const waiting = findItem((i) => i.kind === "user" && i.queued && i.turn === meta.turn_id);
      if (waiting) { waiting.queued = false; changed(waiting); state.running = true; }
    }
    switch (name) {
      case "agent.message_queued": {
        const mine = findItem((i) => i.kind === "user" && i.messageId && i.messageId === meta.message_id);
        if (mine) { mine.queued = true; mine.turn = meta.turn_id; changed(mine); }
        break;
      }
      case "agent.session_resumed":
        sessionReady = true;
        setConn("ok", "connected");
        state.running = !!meta.turn_running;
        if (meta.replay_gap_from) {
          addItem({ kind: "notice", level: "warn", text: "Some events could not be replayed (from #" + meta.replay_gap_from + ")." });
        } else if (meta.replayed) {
          addItem({ kind: "notice", level: "info", text: "Reconnected · " + meta.replayed + " missed event(s) replayed" });
        } else {
          addItem({ kind: "notice", level: "info", text: "Reconnected" });
        }
        if (!state.running) endTurn(null);
        break;
      case "agent.thinking":
        if (meta.reasoning) {
          // The model's own reasoning: kept, collapsed, above the answer of its turn (it
          // arrives after the step's text was streamed).
          const answer = findItem((i) => i.kind === "assistant" && !i.done && i.turn === meta.turn_id);
          addItem({ kind: "reasoning", turn: meta.turn_id, step: meta.step, text: String(ev.content || "") }, answer);
        } else {
          setThinking(String(ev.content || "thinking…"));
        }
        break;
      case "agent.tool_call":
        setThinking(null);
        addItem({ kind: "step", step: ev.step_id, turn: meta.turn_id, tool: meta.tool, args: meta.args,
                  status: "running", result: null, error: null });
        break;
      case "agent.tool_result": {
        const step = findItem((i) => i.kind === "step" && i.step === ev.step_id);
        const target = step || addItem({ kind: "step", step: ev.step_id, turn: meta.turn_id, tool: meta.tool, args: null });
        target.status = meta.status === "success" ? "ok" : "failed";
        target.result = typeof ev.content === "string" ? ev.content : JSON.stringify(ev.content, null, 2);
        target.error = meta.error || null;
        changed(target);
        const pending = findItem((i) => i.kind === "confirm" && i.step === ev.step_id && !i.decided);
        if (pending) { pending.decided = "answered"; changed(pending); }
        break;
      }
      case "agent.user_confirm":
        setThinking(null);
        addItem({ kind: "confirm", step: ev.step_id, turn: meta.turn_id, text: String(ev.content || ""),
                  tool: meta.tool_name, args: meta.tool_args, description: meta.tool_description || "",
                  decided: null });
        break;
      case "agent.partial_answer": {
        setThinking(null);
        // The turn's own bubble, even if a queued message was typed below it meanwhile.
        let answer = findItem((i) => i.kind === "assistant" && !i.done && i.turn === meta.turn_id);
        if (!answer) {
          answer = addItem({ kind: "assistant", turn: meta.turn_id, text: "", done: false });
        }
        answer.text += String(ev.content || "");
        changedLater(answer);
        break;
      }
      case "agent.final_answer": {
        const answer = findItem((i) => i.kind === "assistant" && !i.done && i.turn === meta.turn_id);
        const text = typeof ev.content === "string" ? ev.content : JSON.stringify(ev.content);
        if (answer) {
          answer.text = text;  // authoritative: the deltas add up to it
          answer.done = true;
          changed(answer);
        } else {
          addItem({ kind: "assistant", turn: meta.turn_id, text: text, done: true });
        }
        endTurn(meta.turn_id);
        break;
      }
      case "agent.error": {
        const dropped = findItem((i) => i.kind === "user" && i.queued && i.turn === meta.turn_id);
        if (dropped) { dropped.queued = false; dropped.refused = true; changed(dropped); }
        addItem({ kind: "notice", level: "error", code: meta.error_code, text: String(ev.content || "error") });
        endTurn(meta.turn_id);
        break;
      }
      case "agent.interrupted":
        addItem({ kind: "notice", level: "warn", text: "Interrupted" + (meta.reason ? " (" + meta.reason + ")" : "") + ": " + (ev.content || "") });
        endTurn(meta.turn_id);
        break;
      case "agent.session_end":
        addItem({ kind: "notice", level: "info", text: "Session ended (" + (meta.reason || "closed") + ")." });
        unqueueAll();
        endTurn(null);
        break;
      case "system.notice":
        if (!meta.duplicate) addItem({ kind: "notice", level: "info", text: String(ev.content || "") });
        break;
      case "system.error":
        onError(ev, meta);
        break;
      default:
        break;
    }
    updateControls();
  }

  function onError(ev, meta) {
    const request = meta.request_event;
    if (request === "user.reconnect") {
      // The session is gone (expired, or the server restarted without it): start a new one.
      addItem({ kind: "notice", level: "warn", text: "The previous session could not be resumed (" + (meta.error_code || "error") + "); starting a new one." });
      endTurn(null);
      startSession(true);
      return;
    }
    if (request === "user.ack") return;  // harmless: e.g. an ack racing a session change
    addItem({ kind: "notice", level: "error", code: meta.error_code, text: String(ev.content || "error") });
    if (request === "user.message") {
      // The refused message never ran (a busy session with --multitask reject, a full queue...).
      const refused = findItem((i) => i.kind === "user" && !i.queued && !i.turn && !i.refused);
      if (refused) { refused.refused = true; changed(refused); }
      if (meta.error_code !== "SESSION_BUSY") endTurn(null);
    }
    if (request === "user.create_session") setConn("bad", "no session: " + (meta.error_code || "error"));
  }

  function unqueueAll() {
    for (const item of state.items) {
      if (item.kind === "user" && item.queued) { item.queued = false; item.refused = true; changed(item); }
    }
  }

  function endTurn(turnId) {
    // A message queued behind this turn runs next: the session stays busy until it is done.
    state.running = state.items.some((i) => i.kind === "user" && i.queued);
    setThinking(null);
    for (const item of state.items) {
      if (item.kind === "assistant" && !item.done && (!turnId || item.turn === turnId)) { item.done = true; changed(item); }
      if (item.kind === "confirm" && !item.decided && (!turnId || item.turn === turnId)) { item.decided = "expired"; changed(item); }
      if (item.kind === "step" && item.status === "running" && (!turnId || item.turn === turnId)) { item.status = "stopped"; changed(item); }
    }
    saveSoon();
  }

  // User actions --------------------------------------------------------------------------

  function sendMessage() {
    const input = $("input");
    const text = input.value.trim();
    if (!text || !sessionReady) return;
    // Sent while a turn runs, it waits for it on the server (the server's --multitask,
    // "enqueue" by default) and shows as queued until its own turn starts.
    const messageId = "m" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    const ok = send({ event: "user.message", session_id: state.sessionId, content: text,
                      metadata: { message_id: messageId } });
    if (!ok) return;
    input.value = "";
    autosize();
    addItem({ kind: "user", text: text, messageId: messageId, queued: false });
    state.running = true;
    setThinking("thinking…");
    save();
    updateControls();
  }

  function cancelTurn() {
    if (state.running && sessionReady) send({ event: "user.cancel", session_id: state.sessionId });
  }

  function answerConfirm(item, confirmed) {
    if (item.decided) return;
    const ok = send({ event: "user.response", session_id: state.sessionId, step_id: item.step,
                      content: { confirmed: confirmed } });
    if (!ok) return;
    item.decided = confirmed ? "approved" : "denied";
    changed(item);
  }

  function newSession() {
    if (state.sessionId && sessionReady) send({ event: "user.close_session", session_id: state.sessionId });
    sessionReady = false;
    startSession();
    updateControls();
  }

  function ackLoop() {
    if (sessionReady && state.lastSeq > ackedSeq) {
      save();  // what we acknowledge must be stored first: the server may drop it from its buffer
      if (send({ event: "user.ack", session_id: state.sessionId, content: { last_seq: state.lastSeq } })) {
        ackedSeq = state.lastSeq;
      }
    }
  }

  // Rendering -----------------------------------------------------------------------------

  function renderHeader() {
    const agent = state.agent || {};
    $("agent-name").textContent = agent.name || "myagent-ws";
    $("agent-desc").textContent = agent.description || "";
    document.title = (agent.name ? agent.name + " · " : "") + "myagent-ws console";
  }

  function renderAll() {
    const log = $("log");
    views.clear();
    dirty.clear();
    log.replaceChildren();
    thinking = null;
    if (!state.items.length) {
      const empty = el("div", "empty");
      empty.append(el("div", null, "Ask the agent something."));
      const tools = (state.agent && state.agent.tools) || [];
      if (tools.length) {
        const row = el("div", "tools");
        row.append(el("span", "muted", "Tools:"));
        for (const t of tools) row.append(el("code", null, t));
        empty.append(row);
      }
      log.append(empty);
    }
    for (const item of state.items) renderItem(item);
    if (state.running) setThinking("thinking…");
    updateSessionInfo();
  }

  function renderItem(item, before) {
    dirty.delete(item);
    const log = $("log");
    const empty = log.querySelector(".empty");
    if (empty) empty.remove();
    const node = build(item);
    const old = views.get(item.id);
    if (old) {
      // Keep a step's open/closed state across updates.
      if (old.tagName === "DETAILS" && node.tagName === "DETAILS") node.open = old.open;
      old.replaceWith(node);
    } else if (before && before.parentNode === log) {
      log.insertBefore(node, before);
    } else if (thinking && thinking.parentNode === log) {
      log.insertBefore(node, thinking);
    } else {
      log.append(node);
    }
    views.set(item.id, node);
    scrollDown();
    updateSessionInfo();
  }

  function build(item) {
    switch (item.kind) {
      case "user": {
        const row = el("div", "msg user" + (item.queued ? " queued" : "") + (item.refused ? " refused" : ""));
        if (item.queued || item.refused) row.append(el("span", "queued-tag", item.queued ? "queued" : "not run"));
        row.append(el("div", "bubble", item.text));
        return row;
      }
      case "assistant": {
        const row = el("div", "msg assistant" + (item.done ? "" : " streaming"));
        const bubble = el("div", "bubble md");
        bubble.append(window.myagentMarkdown.render(item.text));
        row.append(bubble);
        return row;
      }
      case "reasoning": {
        const details = el("details", "reasoning");
        details.append(el("summary", null, "Reasoning"), el("div", "reasoning-body", item.text));
        return details;
      }
      case "step": {
        const details = el("details", "step " + item.status);
        const summary = el("summary");
        summary.append(el("span", "icon", "\u2699\uFE0E"), el("code", null, item.tool || "tool"),
                       el("span", "args", formatArgs(item.args)));
        const label = { running: ["running…", ""], ok: ["done", "ok"], failed: ["failed", "bad"],
                        stopped: ["stopped", "warn"] }[item.status] || [item.status, ""];
        summary.append(el("span", "badge " + label[1], label[0]));
        const body = el("div", "step-body");
        body.append(el("div", "label", "Arguments"), el("pre", null, JSON.stringify(item.args ?? {}, null, 2)));
        if (item.result !== null && item.result !== undefined) {
          body.append(el("div", "label", item.status === "failed" ? "Error" : "Result"), el("pre", null, item.result));
        }
        details.append(summary, body);
        return details;
      }
      case "confirm": {
        const box = el("div", "confirm" + (item.decided ? " " + item.decided : ""));
        const q = el("div", "q");
        q.append("⚠️ Allow ", el("code", null, item.tool || "tool"), " to run?");
        box.append(q);
        if (item.description) box.append(el("div", "desc", item.description));
        box.append(el("pre", null, JSON.stringify(item.args ?? {}, null, 2)));
        const actions = el("div", "actions");
        if (!item.decided) {
          const approve = el("button", "primary approve", "Approve");
          const deny = el("button", "danger deny", "Deny");
          approve.type = deny.type = "button";
          approve.onclick = () => answerConfirm(item, true);
          deny.onclick = () => answerConfirm(item, false);
          actions.append(approve, deny);
        } else {
          const text = { approved: "✓ Approved", denied: "✗ Denied", answered: "Answered",
                         expired: "No longer waiting" }[item.decided] || item.decided;
          actions.append(el("span", "decision", text));
        }
        box.append(actions);
        return box;
      }
      case "notice": {
        const node = el("div", "notice " + (item.level || "info"));
        if (item.code) node.append(el("code", null, item.code), " ");
        node.append(item.text);
        return node;
      }
      default:
        return el("div", "notice", JSON.stringify(item));
    }
  }

  function formatArgs(args) {
    if (!args || typeof args !== "object") return args ? String(args) : "";
    return Object.entries(args).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ");
  }

  function setThinking(text) {
    if (!text) {
      if (thinking) thinking.remove();
      thinking = null;
      return;
    }
    if (!thinking) {
      thinking = el("div", "thinking");
      $("log").append(thinking);
    }
    thinking.textContent = text;
    scrollDown();
  }

  function scrollDown() {
    const log = $("log");
    log.scrollTop = log.scrollHeight;
  }

  function updateSessionInfo() {
    $("session-info").textContent = state.sessionId
      ? "session " + state.sessionId + " · seq " + state.lastSeq
      : "no session";
    $("turn-info").textContent = state.running ? "turn running…" : "";
  }

  function updateControls() {
    $("send").disabled = !sessionReady;
    $("cancel").disabled = !(sessionReady && state.running);
    $("new-session").disabled = !connected;
    updateSessionInfo();
  }

  function autosize() {
    const input = $("input");
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 180) + "px";
  }

  // Wiring --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("composer").addEventListener("submit", (e) => { e.preventDefault(); sendMessage(); });
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
    });
    $("input").addEventListener("input", autosize);
    $("cancel").addEventListener("click", cancelTurn);
    $("new-session").addEventListener("click", newSession);
    $("dashboard-link").href = window.myagentToken.link("dashboard");
    window.addEventListener("pagehide", save);
    renderHeader();
    renderAll();
    updateControls();
    setInterval(ackLoop, ACK_EVERY_MS);
    pickAgent(connect);
    $("input").focus();
  });

  window.__console = { get state() { return state; }, get sessionReady() { return sessionReady; } };
})();
