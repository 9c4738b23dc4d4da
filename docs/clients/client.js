// A minimal myagent-ws client: standard WebSocket API only, so the same code runs in a
// browser and in Node 20+ (`node --experimental-websocket`; Node 22 has WebSocket built in).
//
//   node --experimental-websocket docs/clients/client.js ws://127.0.0.1:8080 "/get_weather city=Beijing"
//
// Connects, creates a session, sends one message, prints the streamed answer and the tool
// steps, approves every confirmation, and exits after the turn's terminal event (exit code 0
// for agent.final_answer, 1 otherwise). In Node, a token comes from the environment variable
// MYAGENT_WS_TOKEN (not the command line, where every local user can read it); it is sent as
// ?token=..., since the WebSocket API cannot set headers. Protocol: docs/protocol.md.
//
// In a browser: open the server's own page (http://127.0.0.1:8080/: the server admits
// same-origin pages only, unless started with --allow-origin), open the developer console
// and paste this file; edit `url` and `message` below first.

const args = typeof process !== "undefined" ? process.argv.slice(2) : [];
const url = args[0] || "ws://127.0.0.1:8080";
const message = args[1] || "Hello!";
const token = typeof process !== "undefined" ? process.env.MYAGENT_WS_TOKEN : undefined;

const write = typeof process !== "undefined" ? (t) => process.stdout.write(t) : (t) => console.log(t);
const done = (code) => {
  ws.close();
  if (typeof process !== "undefined") process.exitCode = code;
};

const ws = new WebSocket(token ? `${url}?token=${encodeURIComponent(token)}` : url);
const send = (frame) => ws.send(JSON.stringify(frame));
let sessionId = null;

ws.onopen = () => send({ event: "user.create_session" });

ws.onmessage = (msg) => {
  const ev = JSON.parse(msg.data);
  const meta = ev.metadata || {};
  switch (ev.event) {
    case "agent.session_created":
      sessionId = ev.session_id;
      write(`session ${sessionId} with agent ${meta.agent_name}\n`);
      send({ event: "user.message", session_id: sessionId, content: message });
      break;
    case "agent.partial_answer":      // streamed text deltas
      write(ev.content);
      break;
    case "agent.tool_call":
      write(`\n-> ${meta.tool}(${JSON.stringify(meta.args)})\n`);
      break;
    case "agent.tool_result":
      write(`<- ${meta.status}: ${ev.content}\n`);
      break;
    case "agent.user_confirm":       // a tool asks for approval: approve it
      write(`? ${ev.content} -> approved\n`);
      send({ event: "user.response", session_id: sessionId, step_id: ev.step_id, content: { confirmed: true } });
      break;
    case "agent.final_answer":
      write(`\nFINAL: ${ev.content}\n`);
      done(0);
      break;
    case "agent.error":
    case "agent.interrupted":
      write(`\n${ev.event}: ${ev.content} (${meta.error_code || meta.reason})\n`);
      done(1);
      break;
    case "system.error":             // a refused request; the connection stays usable
      write(`\nerror ${meta.error_code}: ${ev.content}\n`);
      if (!meta.recoverable) done(1);
      break;
  }
};

ws.onclose = (e) => {
  if (typeof process !== "undefined" && process.exitCode === undefined) {
    write(`\nconnection closed (${e.code}) before the answer\n`);
    process.exitCode = 1;
  }
};
ws.onerror = () => {
  write(`cannot talk to ${url}\n`);
  if (typeof process !== "undefined") process.exitCode = 1;
};
