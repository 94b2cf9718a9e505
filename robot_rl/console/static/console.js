// robot-rl operator console: websocket client, camera frames, banners, panels, timeline, charts,
// controls, teleop. Keys are matched by physical position (KeyboardEvent.code), so any layout
// drives the same way; buttons never keep keyboard focus, so Space and Enter cannot repeat one.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const STALE_MS = 500; // a camera frame older than this gets the "stale" overlay
const SILENT_MS = 3000; // no message for this long on an open socket: treated as disconnected
const BACKOFF_S = [0.5, 1, 2, 4, 8, 15, 30];
const MAX_ATTEMPTS = 40; // then stop retrying and say so
const SHORTCUTS = { KeyT: "take_over", KeyH: "hand_back", KeyY: "mark_success", KeyN: "mark_failure",
  KeyZ: "undo_mark", KeyP: "pause", KeyU: "resume", KeyM: "record_demo", Escape: "stop", KeyL: "lock" };
const SHORTCUT_LABELS = { take_over: "take over", hand_back: "hand back", mark_success: "mark success",
  mark_failure: "mark failure", undo_mark: "undo the last mark", pause: "pause", resume: "resume",
  record_demo: "record a demo next episode", stop: "software stop", lock: "lock / unlock control",
  reset: "reset (press twice)" };
const stats = { frames: 0, states: 0, lastLatencyMs: null, frameAgeMs: {}, stale: {},
  connected: false, attempts: 0, controlsSent: [], acks: 0, errors: 0 };
window.consoleStats = stats;
// Each camera's on-screen frame age now (ms): what the operator sees, for tests and the bench.
window.consoleFrameAges = () => Object.fromEntries(Object.entries(frameStamp).map(([c, t]) => [c, Date.now() - t]));
let ws = null;
let lastMessageMs = 0;
let attempt = 0;
let retryTimer = null;
let me = "";
let state = {};
let teleopKeys = {}; // KeyboardEvent.code -> key name the server knows ("w")
let undoWindowS = 5;
let resetArmedUntil = 0;
const frameStamp = {}; // camera -> capture stamp (ms) of the frame on screen

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN && stats.connected) { ws.send(JSON.stringify(message)); return true; }
  return false;
}
function control(name) {
  if (name === "lock" && state.locked && state.owner === me) name = "unlock";
  if (!send({ type: "control", name: name, t_ms: Date.now() })) {
    toast(`NOT SENT (${name}): the console is disconnected. The software stop is unavailable: use the hardware stop.`, true);
    return;
  }
  stats.controlsSent.push(name);
}

// -- connection -------------------------------------------------------------------------------
function connect() {
  retryTimer = null;
  attempt += 1;
  stats.attempts = attempt;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { attempt = 0; lastMessageMs = Date.now(); setConnected(true, "connected"); };
  ws.onclose = () => scheduleRetry();
  ws.onerror = () => {};
  ws.onmessage = (event) => {
    lastMessageMs = Date.now();
    if (!stats.connected) setConnected(true, "connected");
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "hello") hello(msg);
      else if (msg.type === "state") showState(msg);
      else if (msg.type === "ack") { stats.acks += 1; ack(msg); }
      else if (msg.type === "error") { stats.errors += 1; toast(msg.error, true); }
    } else {
      showFrame(event.data, Date.now());
    }
  };
}
function scheduleRetry() {
  if (retryTimer !== null) return;
  if (attempt >= MAX_ATTEMPTS) {
    setConnected(false, "disconnected: gave up retrying (the session has probably ended); reload to try again");
    return;
  }
  const delay = BACKOFF_S[Math.min(attempt, BACKOFF_S.length - 1)];
  setConnected(false, `disconnected: retrying in ${delay} s (attempt ${attempt + 1} of ${MAX_ATTEMPTS})`);
  retryTimer = setTimeout(connect, delay * 1000);
}
function setConnected(up, text) {
  stats.connected = up;
  document.body.classList.toggle("disconnected", !up);
  setText("connection", text);
  showBanner();
  showBadges();
}
setInterval(() => { // an open socket that went silent is as dead as a closed one
  if (stats.connected && Date.now() - lastMessageMs > SILENT_MS) {
    setConnected(false, `no data for ${((Date.now() - lastMessageMs) / 1000).toFixed(0)} s: reconnecting`);
    if (ws) ws.close();
  }
}, 500);

function hello(msg) {
  me = msg.client || "";
  undoWindowS = msg.undo_window_s || 5;
  for (const name of msg.cameras || []) ensureCamera(name);
  teleopKeys = {};
  for (const key of Object.keys(msg.keys || {})) {
    const code = /^[a-z]$/.test(key) ? `Key${key.toUpperCase()}` : /^[0-9]$/.test(key) ? `Digit${key}` : key;
    teleopKeys[code] = key;
  }
  showKeyMap(msg.keys || {});
}

// -- cameras: one view per camera, made once and kept ----------------------------------------------
// Each view is a canvas: a frame is decoded off the page's main thread (createImageBitmap) and
// drawn at once, with no object URL and no <img> load cycle in between.
function ensureCamera(name) {
  const id = `cam-${name}`;
  let view = document.getElementById(id);
  if (view) return view;
  const fig = document.createElement("figure");
  view = document.createElement("canvas");
  view.id = id;
  view.setAttribute("role", "img");
  view.setAttribute("aria-label", `${name} camera`);
  view.dataset.seq = "0";
  const overlay = document.createElement("div");
  overlay.className = "stale hidden"; overlay.id = `stale-${name}`;
  const caption = document.createElement("figcaption");
  caption.textContent = `${name} `;
  const age = document.createElement("span");
  age.id = `age-${name}`;
  caption.appendChild(age);
  fig.append(view, overlay, caption);
  document.getElementById("cameras").appendChild(fig);
  return view;
}
const arrivals = {}; // camera -> how many of its frames reached the page (the newest's ticket)
const drawn = {}; // camera -> the ticket of the frame on screen
async function showFrame(buffer, receivedMs) {
  const view = new DataView(buffer);
  const headerLength = view.getUint16(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 2, headerLength)));
  const blob = new Blob([new Uint8Array(buffer, 2 + headerLength)], { type: "image/jpeg" });
  const canvas = ensureCamera(header.camera);
  const ticket = (arrivals[header.camera] || 0) + 1;
  arrivals[header.camera] = ticket;
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (err) { // a frame that does not decode is skipped; the next one replaces it
    stats.badFrames = (stats.badFrames || 0) + 1;
    return;
  }
  // Decodes can finish out of order: never replace a newer frame with an older one. (Arrival
  // order, not seq: a restarted camera counts its seq from the start again.)
  if (ticket < (drawn[header.camera] || 0)) { bitmap.close(); return; }
  drawn[header.camera] = ticket;
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width; canvas.height = bitmap.height;
    canvas.style.aspectRatio = `${bitmap.width} / ${bitmap.height}`;
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  const ms = Date.now() - header.stamp_ms;
  stats.frames += 1;
  stats.lastLatencyMs = ms;
  canvas.dataset.seq = header.seq;
  frameStamp[header.camera] = header.stamp_ms;
  send({ type: "latency", camera: header.camera, ms: ms, received_ms: receivedMs - header.stamp_ms });
  showAges();
}
function showAges() {
  let worst = null;
  for (const [camera, stamp] of Object.entries(frameStamp)) {
    const age = Date.now() - stamp;
    stats.frameAgeMs[camera] = age;
    const stale = age > STALE_MS;
    stats.stale[camera] = stale;
    worst = worst === null ? age : Math.max(worst, age);
    setText(`age-${camera}`, `frame age ${age.toFixed(0)} ms`);
    const overlay = document.getElementById(`stale-${camera}`);
    if (overlay.classList.contains("hidden") === stale) overlay.classList.toggle("hidden", !stale);
    if (stale) setText(`stale-${camera}`, `STALE: frame ${(age / 1000).toFixed(1)} s old`);
  }
  if (worst !== null) {
    setText("frame_age", `${worst.toFixed(0)} ms (oldest camera)`);
    health("h_frames", worst < 200 ? "ok" : worst < STALE_MS ? "warn" : "bad");
  }
}
setInterval(showAges, 100);

// -- state ------------------------------------------------------------------------------------
function setText(id, value) { // touches the DOM only on a change
  const el = document.getElementById(id);
  const text = String(value);
  if (el && el.textContent !== text) el.textContent = text;
}
function setClass(el, cls) { if (el.className !== cls) el.className = cls; }
function fmt(value, digits = 3) {
  if (value === undefined || value === null) return "-";
  if (Array.isArray(value)) return "[" + value.map((v) => (v === null ? "nan" : Number(v).toFixed(digits))).join(", ") + "]";
  if (typeof value === "number") return value.toFixed(digits);
  return String(value);
}
function health(id, level) {
  const el = document.getElementById(id);
  if (el) setClass(el, `health ${level || ""}`);
}

function showBadges() {
  const badge = document.getElementById("control");
  const s = state;
  let text = s.in_control || "policy", cls = text;
  if (!stats.connected) { text = "DISCONNECTED"; cls = "offline"; }
  else if (s.stopped) { text = "STOPPED: nobody drives"; cls = "stopped"; }
  else if (s.robot_mode === "fault") { text = "FAULT: nobody drives"; cls = "fault"; }
  else if (s.robot_mode === "damp" || s.robot_mode === "stopped") { text = `${s.robot_mode}: nobody drives`; cls = "stopped"; }
  else if (s.paused) { text = `paused (${s.in_control || "policy"})`; cls = "offline"; }
  if (badge.textContent !== text) badge.textContent = text;
  setClass(badge, `badge ${cls}`);
  const mode = document.getElementById("mode");
  const m = s.stopped && (!s.robot_mode || s.robot_mode === "active") ? "stopped" : s.robot_mode;
  const modeText = m ? `robot ${m}` : "robot mode not reported";
  if (mode.textContent !== modeText) mode.textContent = modeText;
  setClass(mode, `badge mode ${m || ""}`);
}
function showBanner() {
  const banner = document.getElementById("banner");
  const s = state;
  let text = "", cls = "";
  if (!stats.connected) {
    text = "DISCONNECTED: what you see is old, and the software stop is unavailable. Use the hardware stop.";
    cls = "offline";
  } else if (s.stopped) {
    text = `SOFTWARE STOP: robot ${s.robot_mode || "stopped"}. Press "Clear stop" to continue.`; cls = "stop";
  } else if (s.robot_mode === "fault") {
    text = `ROBOT FAULT: ${s.robot_fault_text || "the arm is damped"}. Check the robot server's log.`; cls = "stop";
  } else if (s.robot_mode === "damp" || s.robot_mode === "stopped") {
    text = `ROBOT ${s.robot_mode.toUpperCase()}: targets stalled or stopped; the arm is not tracking.`; cls = "stop";
  } else if (s.paused) {
    text = "PAUSED: the policy loop holds. Press Resume (U) to continue."; cls = "warn";
  } else if (s.robot_mode === "hold") {
    text = "ROBOT HOLD: targets stalled; the arm holds its pose."; cls = "warn";
  }
  if (banner.textContent !== text) banner.textContent = text;
  setClass(banner, `banner ${cls}${text ? "" : " hidden"}`);
  stats.banner = text;
}

function showState(s) {
  stats.states += 1;
  if (s.steps_held === undefined && s.held_steps !== undefined) s.steps_held = s.held_steps;
  if (s.steps_stored === undefined && s.steps_received !== undefined) s.steps_stored = s.steps_received;
  state = s;
  showBadges();
  showBanner();
  setText("episode", s.episode);
  setText("step", s.step ?? 0);
  setText("step_limit", s.step_limit ?? "-");
  if (s.step_limit && s.policy_period_s) {
    setText("time_left", `${Math.max(0, (s.step_limit - (s.step || 0)) * s.policy_period_s).toFixed(1)} s left`);
  }
  const rec = document.getElementById("recording");
  setClass(rec, `rec ${s.recording ? "on" : "off"}`);
  const stored = s.steps_stored === undefined ? "" : `, stored ${s.steps_stored} / held ${s.steps_held ?? 0}`;
  setText("recording", `${s.recording ? "● REC demo" : "demo off"}${stored}`);
  const owner = s.in_control === "operator" ? (s.owner || "a teleop device") : "policy";
  setText("owner", `control: ${owner}${s.owner && s.owner === me ? " (this page)" : ""}${s.locked ? ", LOCKED" : ""}; ${s.clients ?? 1} page(s) open`);
  const lock = document.getElementById("lock_button");
  const lockText = s.locked && s.owner === me ? "Unlock " : "Lock ";
  if (lock.firstChild.textContent !== lockText) lock.firstChild.textContent = lockText;
  setText("tcp", fmt(s.tcp_pos_m));
  setText("gripper", s.gripper_width_m == null ? "-" : `${(s.gripper_width_m * 1000).toFixed(1)} mm`);
  setText("policy_action", fmt(s.policy_action, 2));
  setText("operator_action", fmt(s.operator_action, 2));
  setText("action_note", `actions: ${s.action_frame || "reset frame"}, normalised -1..1 (dx, dy, dz, [dyaw], gripper)`);
  showDetector(s);
  showHealth(s);
  setText("episode_return", fmt(s.episode_return, 2));
  setText("success_rate", fmt(s.success_rate, 2));
  setText("intervention_rate", fmt(s.intervention_rate, 2));
  setText("marks", s.marks);
  setText("buffers", s.demo_buffer === undefined ? "-" : `demo ${s.demo_buffer}, online ${s.online_buffer}`);
  setText("last_checkpoint", s.last_checkpoint ?? "-");
  const c = s.charts || {};
  chart("chart_success", { title: "Success per episode (mean of last 10)", x: "episode", y: "success rate", lo: 0, hi: 1, values: smooth(c.success || [], 10) });
  chart("chart_returns", { title: "Return per episode", x: "episode", y: "return (sum of rewards)", values: c.returns || [] });
  chart("chart_interventions", { title: "Intervention rate per episode", x: "episode", y: "operator steps / steps", lo: 0, hi: 1, values: c.interventions || [] });
  chart("chart_utd", { title: "Learner UTD (updates per env step)", x: "report", y: "UTD", lo: 0, values: c.utd || [], line: s.utd_target, lineLabel: "target" });
  chart("chart_loss", { title: "Learner loss", x: "report", y: "loss", values: c.loss || [] });
  timeline(s);
}

function showDetector(s) {
  const has = s.detector || s.threshold != null || s.success_probability != null;
  document.getElementById("detector_none").classList.toggle("hidden", !!has);
  document.getElementById("detector_box").classList.toggle("hidden", !has);
  if (!has) return;
  const theta = s.threshold;
  const hi = theta != null && theta < 0.5 ? Math.min(1, 2 * theta) : 1; // keep the threshold mid-bar
  const p = s.success_probability || 0;
  document.getElementById("score_bar").style.width = `${100 * Math.min(1, p / hi)}%`;
  document.getElementById("threshold_mark").style.left = `${theta == null ? 0 : 100 * Math.min(1, theta / hi)}%`;
  setText("bar_scale", hi < 1 ? `(bar 0-${hi.toFixed(2)})` : "");
  setText("score", fmt(s.success_probability));
  setText("threshold", fmt(theta));
  const fired = s.detector_fired || (s.timeline && s.timeline.fired_step != null);
  document.getElementById("fired").classList.toggle("hidden", !fired);
}

function showHealth(s) {
  setText("utd", fmt(s.utd, 2));
  setText("utd_target", fmt(s.utd_target, 1));
  if (s.utd != null && s.utd_target) {
    const r = s.utd / s.utd_target;
    health("h_utd", r >= 0.8 ? "ok" : r >= 0.3 ? "warn" : "bad");
  } else health("h_utd", "");
  setText("updates_per_s", fmt(s.updates_per_s, 1));
  setText("weight_age_s", fmt(s.weight_age_s, 1));
  setText("weights_version", s.weights_version ?? "-");
  if (s.weight_age_s != null) health("h_weight", s.weight_age_s < 30 ? "ok" : s.weight_age_s < 120 ? "warn" : "bad");
  if (s.robot_loop_hz != null) {
    const target = s.robot_loop_hz_target || 1000;
    if (s.robot_loop_clock === "lockstep") { // a lockstep twin never misses a tick of sim time
      const rt = s.robot_realtime_factor == null ? "" : s.robot_realtime_factor > 0.005 ? `, ${fmt(s.robot_realtime_factor, 2)}x real time` : ", held";
      setText("loop_hz", `${fmt(target, 0)} Hz sim time (lockstep twin${rt})`);
      health("h_loop", "ok");
    } else {
      setText("loop_hz", `${fmt(s.robot_loop_hz, 0)} Hz of ${fmt(target, 0)} Hz`);
      const r = s.robot_loop_hz / target;
      health("h_loop", r >= 0.95 ? "ok" : r >= 0.8 ? "warn" : "bad");
    }
  } else if (s.robot_mode === "fault" && s.robot_fault_text) {
    setText("loop_hz", "no data"); health("h_loop", "bad");
  }
  const mode = s.stopped ? "stopped" : s.robot_mode;
  setText("watchdog", mode || "-");
  health("h_watchdog", mode === "active" ? "ok" : mode === "hold" ? "warn" : mode ? "bad" : "");
  setText("steps_stored", s.steps_stored ?? "-");
  setText("steps_held", s.steps_held ?? "-");
  if (s.steps_held != null) health("h_stored", s.steps_held < 500 ? "ok" : s.steps_held < 5000 ? "warn" : "bad");
  const list = document.getElementById("warnings");
  const warnings = Array.isArray(s.robot_warnings) ? s.robot_warnings.slice(-5) : [];
  if (s.robot_fault_text) warnings.unshift(`robot fault: ${s.robot_fault_text}`);
  if (s.robot_connected === false) warnings.unshift("robot: the arm is not connected");
  if (s.learner_error) warnings.push(`learner: ${s.learner_error}`);
  const joined = warnings.join("\n");
  if (list.dataset.shown !== joined) {
    list.dataset.shown = joined;
    list.replaceChildren(...warnings.map((w) => { const li = document.createElement("li"); li.textContent = String(w); return li; }));
  }
}

// -- charts: title, axes with units and range; one point draws a dot ---------------------------------
function smooth(values, n) {
  return values.map((_, i) => {
    const part = values.slice(Math.max(0, i - n + 1), i + 1);
    return part.reduce((a, b) => a + b, 0) / part.length;
  });
}
const chartKeys = {}; // chart id -> what it last drew: redraw only on change
function chart(id, o) {
  const key = `${o.values.length}:${o.values[o.values.length - 1]}:${o.line}`;
  if (chartKeys[id] === key) return;
  chartKeys[id] = key;
  const canvas = document.getElementById(id);
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 44, R = 8, T = 18, B = 18;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#ccc"; g.font = "12px sans-serif"; g.fillText(o.title, L, 12);
  g.fillStyle = "#888"; g.font = "10px sans-serif";
  const values = o.values.filter((v) => v !== null && Number.isFinite(v));
  g.strokeStyle = "#555"; g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  g.fillText(`${o.x} (${values.length})`, W - R - 90, H - 4);
  g.save(); g.translate(10, H - B); g.rotate(-Math.PI / 2); g.fillText(o.y, 0, 0); g.restore();
  if (!values.length) { g.fillText("no data yet", L + 8, (T + H - B) / 2); return; }
  let lo = o.lo ?? Math.min(...values), hi = o.hi ?? Math.max(...values);
  if (o.line != null) { lo = Math.min(lo, o.line); hi = Math.max(hi, o.line); }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  g.fillText(fmtTick(hi), 14, T + 8); g.fillText(fmtTick(lo), 14, H - B);
  const x = (i) => L + 4 + (values.length === 1 ? 0.5 : i / (values.length - 1)) * (W - L - R - 8);
  const y = (v) => H - B - 2 - ((v - lo) / (hi - lo)) * (H - B - T - 4);
  if (o.line != null) {
    g.strokeStyle = "#999"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(L, y(o.line)); g.lineTo(W - R, y(o.line)); g.stroke();
    g.setLineDash([]); g.fillText(`${o.lineLabel} ${fmtTick(o.line)}`, W - R - 70, y(o.line) - 2);
  }
  g.strokeStyle = "#6c6"; g.fillStyle = "#6c6"; g.beginPath();
  values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
  const last = values.length - 1;
  g.beginPath(); g.arc(x(last), y(values[last]), 3, 0, 2 * Math.PI); g.fill();
}
function fmtTick(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2); }

let timelineKey = "";
function timeline(s) {
  const t0 = s.timeline || { control: "", score: [], marks: [] };
  const key = `${s.episode}:${t0.control.length}:${(t0.marks || []).length}:${t0.fired_step}:${s.threshold}:${s.step_limit}`;
  if (key === timelineKey) return;
  timelineKey = key;
  const canvas = document.getElementById("timeline");
  const rect = canvas.getBoundingClientRect();
  if (rect.width > 0 && Math.abs(canvas.width - rect.width) > 2) canvas.width = Math.round(rect.width);
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 4, R = 4;
  g.clearRect(0, 0, W, H);
  const t = s.timeline || { control: "", score: [], marks: [] };
  const n = t.control.length;
  const limit = Math.max(s.step_limit || 0, n, 1);
  const x = (i) => L + (i / limit) * (W - L - R);
  for (let i = 0; i < n; i++) { // who controlled each step
    g.fillStyle = t.control[i] === "o" ? "#f90" : "#3a3";
    g.fillRect(x(i), 4, Math.max(1, x(i + 1) - x(i)), 12);
  }
  const top = 22, bottom = H - 16, y = (p) => bottom - p * (bottom - top);
  g.strokeStyle = "#444"; g.strokeRect(L, top, W - L - R, bottom - top);
  if (s.threshold != null) {
    g.strokeStyle = "#ccc"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(L, y(s.threshold)); g.lineTo(W - R, y(s.threshold)); g.stroke(); g.setLineDash([]);
  }
  g.strokeStyle = "#6af"; g.beginPath();
  let started = false;
  t.score.forEach((p, i) => { if (p === null) return; if (started) g.lineTo(x(i + 0.5), y(p)); else { g.moveTo(x(i + 0.5), y(p)); started = true; } });
  g.stroke();
  g.font = "11px sans-serif";
  if (!started && s.threshold == null) { g.fillStyle = "#777"; g.fillText("no detector", L + 6, top + 14); }
  for (const m of t.marks || []) {
    g.strokeStyle = g.fillStyle = m.mark === "mark_success" ? "#4f4" : "#f44";
    g.beginPath(); g.moveTo(x(m.step), 2); g.lineTo(x(m.step), H - 14); g.stroke();
    g.fillText(m.mark === "mark_success" ? "success" : "failure", x(m.step) + 2, top + 10);
  }
  if (t.fired_step != null) { g.fillStyle = "#f0f"; g.fillText("detector fired", x(t.fired_step) + 2, bottom - 2); }
  g.fillStyle = "#aaa";
  const left = s.step_limit && s.policy_period_s ? `, ${Math.max(0, (s.step_limit - n) * s.policy_period_s).toFixed(1)} s left` : "";
  g.fillText(`step ${n} of ${s.step_limit || "?"}${left}`, L, H - 3);
}

// -- feedback: confirmations, undo --------------------------------------------------------------
let toastTimer = null;
function toast(text, error, undo) {
  const box = document.getElementById("toast");
  box.replaceChildren(document.createTextNode(text));
  if (undo) {
    const b = document.createElement("button");
    b.textContent = `Undo (Z, ${undoWindowS} s)`; b.tabIndex = -1;
    b.addEventListener("mousedown", (e) => e.preventDefault());
    b.addEventListener("click", () => control("undo_mark"));
    box.appendChild(b);
  }
  box.className = `toast${error ? " error" : ""}`;
  stats.toast = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.add("hidden"), (undo ? undoWindowS : 4) * 1000);
}
function ack(msg) {
  const isMark = msg.control === "mark_success" || msg.control === "mark_failure";
  toast(msg.message, false, isMark);
}

// -- keys and buttons -----------------------------------------------------------------------------
function showKeyMap(keys) {
  const rows = [["Esc", SHORTCUT_LABELS.stop], ["T", SHORTCUT_LABELS.take_over], ["H", SHORTCUT_LABELS.hand_back],
    ["L", SHORTCUT_LABELS.lock], ["Y", SHORTCUT_LABELS.mark_success], ["N", SHORTCUT_LABELS.mark_failure],
    ["Z", SHORTCUT_LABELS.undo_mark], ["Backspace x2", SHORTCUT_LABELS.reset], ["P", SHORTCUT_LABELS.pause],
    ["U", SHORTCUT_LABELS.resume], ["M", SHORTCUT_LABELS.record_demo]];
  for (const [key, action] of Object.entries(keys)) rows.push([key.toUpperCase(), `teleop ${action} (hold)`]);
  const table = document.getElementById("keymap");
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); const kbd = document.createElement("kbd"); kbd.textContent = k; a.appendChild(kbd);
    const b = document.createElement("td"); b.textContent = v;
    tr.append(a, b); return tr;
  }));
}
function resetWithConfirm(button) {
  if (Date.now() < resetArmedUntil) { resetArmedUntil = 0; if (button) button.classList.remove("armed"); control("reset"); return; }
  resetArmedUntil = Date.now() + 2000;
  if (button) { button.classList.add("armed"); setTimeout(() => button.classList.remove("armed"), 2000); }
  toast("Reset ends this episode unlabelled: press Backspace (or click Reset) again within 2 s", true);
}
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.code === "Space" || event.code === "Enter" || event.code === "NumpadEnter") { event.preventDefault(); return; }
  if (event.repeat) { if (SHORTCUTS[event.code] || event.code === "Backspace") event.preventDefault(); return; }
  if (event.code === "Backspace") { event.preventDefault(); resetWithConfirm(document.querySelector('[data-control="reset"]')); }
  else if (SHORTCUTS[event.code]) { event.preventDefault(); control(SHORTCUTS[event.code]); }
  else if (teleopKeys[event.code]) send({ type: "key", key: teleopKeys[event.code], down: true, t_ms: Date.now() });
});
document.addEventListener("keyup", (event) => {
  if (teleopKeys[event.code]) send({ type: "key", key: teleopKeys[event.code], down: false, t_ms: Date.now() });
});
window.addEventListener("blur", () => Object.values(teleopKeys).forEach((k) => send({ type: "key", key: k, down: false })));
for (const button of document.querySelectorAll("button[data-control]")) {
  button.tabIndex = -1; // never in the tab order, never focused: Space/Enter cannot press it again
  button.addEventListener("mousedown", (event) => event.preventDefault());
  button.addEventListener("click", (event) => {
    button.blur();
    if (event.detail === 0) return; // a synthetic keyboard "click" (Space/Enter), not the mouse
    if (button.dataset.confirm) resetWithConfirm(button); else control(button.dataset.control);
  });
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
