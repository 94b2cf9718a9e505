// robot-rl operator console: websocket client, camera frames, panels, charts, controls, teleop.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const SHORTCUTS = { t: "take_over", h: "hand_back", y: "mark_success", n: "mark_failure",
  Backspace: "reset", p: "pause", u: "resume", m: "record_demo", Escape: "stop" };
const TELEOP_KEYS = new Set(["w", "s", "a", "d", "r", "f", "q", "e", "c", "o"]);
const stats = { frames: 0, states: 0, lastLatencyMs: null };
window.consoleStats = stats;
let ws = null;

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}
function control(name) { send({ type: "control", name: name, t_ms: Date.now() }); }

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setText("connection", "connected");
  ws.onclose = () => { setText("connection", "disconnected: retrying"); setTimeout(connect, 1000); };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "hello") makeCameras(msg.cameras);
      else if (msg.type === "state") showState(msg);
      else if (msg.type === "error") console.warn("console:", msg.error);
    } else {
      showFrame(event.data);
    }
  };
}

function makeCameras(names) {
  const box = document.getElementById("cameras");
  box.innerHTML = "";
  for (const name of names) {
    const fig = document.createElement("figure");
    fig.innerHTML = `<img id="cam-${name}" alt="${name}"><figcaption>${name} <span id="age-${name}"></span></figcaption>`;
    box.appendChild(fig);
  }
}

function showFrame(buffer) {
  const view = new DataView(buffer);
  const headerLength = view.getUint16(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 2, headerLength)));
  const blob = new Blob([new Uint8Array(buffer, 2 + headerLength)], { type: "image/jpeg" });
  let img = document.getElementById(`cam-${header.camera}`);
  if (!img) { makeCameras([header.camera]); img = document.getElementById(`cam-${header.camera}`); }
  const url = URL.createObjectURL(blob);
  img.onload = () => {
    const ms = Date.now() - header.stamp_ms;
    stats.frames += 1;
    stats.lastLatencyMs = ms;
    img.dataset.seq = header.seq;
    setText(`age-${header.camera}`, `${ms.toFixed(0)} ms`);
    send({ type: "latency", camera: header.camera, ms: ms });
    URL.revokeObjectURL(url);
  };
  img.src = url;
}

function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}
function fmt(value, digits = 3) {
  if (value === undefined || value === null) return "-";
  if (Array.isArray(value)) return "[" + value.map((v) => Number(v).toFixed(digits)).join(", ") + "]";
  if (typeof value === "number") return value.toFixed(digits);
  return String(value);
}

function showState(s) {
  stats.states += 1;
  const badge = document.getElementById("control");
  badge.textContent = s.in_control;
  badge.className = `badge ${s.in_control}`;
  setText("episode", s.episode);
  const flags = [];
  if (s.paused) flags.push("PAUSED");
  if (s.recording) flags.push("RECORDING DEMO");
  if (s.stopped) flags.push("STOPPED");
  setText("flags", flags.join(" | "));
  setText("tcp", fmt(s.tcp_pos_m));
  setText("gripper", fmt(s.gripper_width_m));
  setText("policy_action", fmt(s.policy_action, 2));
  setText("operator_action", fmt(s.operator_action, 2));
  setText("score", fmt(s.success_probability));
  setText("threshold", fmt(s.threshold));
  document.getElementById("score_bar").style.width = `${100 * (s.success_probability || 0)}%`;
  document.getElementById("threshold_mark").style.left = `${100 * (s.threshold || 0)}%`;
  setText("episode_return", fmt(s.episode_return, 2));
  setText("success_rate", fmt(s.success_rate, 2));
  setText("intervention_rate", fmt(s.intervention_rate, 2));
  setText("marks", s.marks);
  setText("updates_per_s", fmt(s.updates_per_s, 1));
  setText("utd", fmt(s.utd, 2));
  setText("weight_age_s", fmt(s.weight_age_s, 1));
  setText("weights_version", s.weights_version ?? "-");
  setText("buffers", s.demo_buffer === undefined ? "-" : `demo ${s.demo_buffer}, online ${s.online_buffer}`);
  setText("last_checkpoint", s.last_checkpoint ?? "-");
  const c = s.charts || {};
  chart("chart_success", smooth(c.success || [], 10), 0, 1);
  chart("chart_returns", c.returns || []);
  chart("chart_score", c.score || [], 0, 1, s.threshold);
}

function smooth(values, n) {
  return values.map((_, i) => {
    const part = values.slice(Math.max(0, i - n + 1), i + 1);
    return part.reduce((a, b) => a + b, 0) / part.length;
  });
}
function chart(id, values, lo, hi, line) {
  const canvas = document.getElementById(id);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (!values.length) return;
  lo = lo ?? Math.min(...values);
  hi = hi ?? Math.max(...values);
  const span = hi - lo || 1;
  const x = (i) => (i / Math.max(1, values.length - 1)) * (canvas.width - 4) + 2;
  const y = (v) => canvas.height - 3 - ((v - lo) / span) * (canvas.height - 6);
  if (line !== undefined && line !== null) {
    g.strokeStyle = "#777"; g.beginPath(); g.moveTo(0, y(line)); g.lineTo(canvas.width, y(line)); g.stroke();
  }
  g.strokeStyle = "#6c6"; g.beginPath();
  values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
}

document.addEventListener("keydown", (event) => {
  if (event.repeat) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (SHORTCUTS[key]) { event.preventDefault(); control(SHORTCUTS[key]); }
  else if (TELEOP_KEYS.has(key)) send({ type: "key", key: key, down: true, t_ms: Date.now() });
});
document.addEventListener("keyup", (event) => {
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (TELEOP_KEYS.has(key)) send({ type: "key", key: key, down: false, t_ms: Date.now() });
});
window.addEventListener("blur", () => TELEOP_KEYS.forEach((k) => send({ type: "key", key: k, down: false })));
for (const button of document.querySelectorAll("button[data-control]")) {
  button.addEventListener("click", () => control(button.dataset.control));
}

// Browser gamepad (Gamepad API, standard mapping): sent while deflected, and once on release.
let padActive = false;
setInterval(() => {
  const pads = navigator.getGamepads ? navigator.getGamepads() : [];
  const pad = Array.from(pads).find((p) => p);
  if (!pad) return;
  const axes = pad.axes.slice(0, 4);
  const buttons = pad.buttons.slice(0, 8).map((b) => b.pressed);
  const active = axes.some((a) => Math.abs(a) > 0.05) || buttons.some((b) => b);
  if (active || padActive) send({ type: "gamepad", axes: axes, buttons: buttons, t_ms: Date.now() });
  padActive = active;
}, 33);

connect();
