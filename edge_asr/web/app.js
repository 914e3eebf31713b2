// The edge-asr page: memory (figures and a chart of the last minutes with the lifecycle events on
// it), one row per model with its controls and settings, the event log, and a panel that runs the
// chain (speech -> LLM -> voice) and captions the microphone live. Plain JavaScript, no build step; everything through the public
// HTTP API, with the API key (when the service has one) kept in this browser's localStorage.
"use strict";

const CHART_SECONDS = 300;
const KEY_STORE = "edge-asr.api-key";
const $ = (id) => document.getElementById(id);
const state = { readings: [], events: [], models: new Map(), recorded: null };

// ---- HTTP -------------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askForKey(key ? "The service refused this key; enter a valid one." : "This service needs an API key.");
    throw new ApiError("API key needed");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new ApiError(message);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

// Server-sent events from a response body (`data: <json>` blocks); `[DONE]` ends OpenAI's chat stream.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data !== "[DONE]") onData(JSON.parse(data));
      }
    }
  }
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-message").textContent = message;
  $("connection").textContent = "API key needed";
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(KEY_STORE, $("key-input").value.trim());
  $("key-form").hidden = true;
  $("key-message").textContent = "";
  start();
});

// ---- formatting -------------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let value = Math.abs(n);
  while (value >= 1000 && i < units.length - 1) { value /= 1000; i += 1; }
  return `${n < 0 ? "-" : ""}${value.toFixed(i > 1 ? 2 : 0)} ${units[i]}`;
}

const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");

function countdown(expiresAt) {
  if (!expiresAt) return "–";
  const left = Math.max(0, Math.round(expiresAt - Date.now() / 1000));
  return left >= 60 ? `${Math.floor(left / 60)} min ${left % 60} s` : `${left} s`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "testid") node.dataset.testid = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// ---- memory -----------------------------------------------------------------------------------

function addReading(reading) {
  if (state.readings.length && reading.time <= state.readings[state.readings.length - 1].time) return;
  state.readings.push(reading);
  const cutoff = Date.now() / 1000 - CHART_SECONDS;
  while (state.readings.length && state.readings[0].time < cutoff) state.readings.shift();
  $("mem-available").textContent = bytes(reading.available_bytes);
  $("mem-total").textContent = bytes(reading.total_bytes);
  $("mem-used").textContent = bytes(reading.used_bytes);
  $("mem-swap").textContent = `${bytes(reading.swap_used_bytes)} of ${bytes(reading.swap_total_bytes)}`;
  $("mem-gpu").textContent = reading.gpu_shared_bytes === null ? "not known" : bytes(reading.gpu_shared_bytes);
  $("mem-source").textContent = reading.source;
}

const EVENT_COLOURS = { ready: "#137333", unloaded: "#b06000", failed: "#c5221f" };

function drawChart() {
  const canvas = $("chart");
  const width = canvas.clientWidth || 1200;
  const height = canvas.clientHeight || 260;
  const scale = window.devicePixelRatio || 1;
  canvas.width = width * scale;
  canvas.height = height * scale;
  const g = canvas.getContext("2d");
  g.scale(scale, scale);
  g.clearRect(0, 0, width, height);
  const now = Date.now() / 1000;
  const left = 56;
  const x = (t) => left + ((t - (now - CHART_SECONDS)) / CHART_SECONDS) * (width - left - 8);
  // The axis spans what the readings span (a few hundred MB of swaps on a 16-GB unit would be a
  // flat line on a 0-to-total axis), at least 200 MB, never above the total or below zero.
  const values = state.readings.map((r) => r.available_bytes);
  const total = Math.max(1, ...state.readings.map((r) => r.total_bytes));
  const pad = Math.max(100e6, (Math.max(...values) - Math.min(...values)) * 0.15);
  const low = values.length ? Math.max(0, Math.min(...values) - pad) : 0;
  const high = values.length ? Math.min(total, Math.max(...values) + pad) : total;
  const y = (b) => height - 20 - ((b - low) / Math.max(1, high - low)) * (height - 34);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#5b6470";
  g.strokeStyle = "#e3e6ea";
  for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
    const level = low + (high - low) * fraction;
    g.beginPath(); g.moveTo(left, y(level)); g.lineTo(width - 8, y(level)); g.stroke();
    g.fillText(bytes(level), 2, y(level) + 4);
  }
  g.fillText(`last ${CHART_SECONDS / 60} minutes · available memory`, left, height - 4);
  const events = state.events.filter((e) => e.time > now - CHART_SECONDS && e.from !== e.to);
  for (const e of events) {
    g.strokeStyle = EVENT_COLOURS[e.to] || "#5b6470";
    g.beginPath(); g.moveTo(x(e.time), 12); g.lineTo(x(e.time), height - 20); g.stroke();
  }
  // One label per group of events too close to tell apart (several models loading at once): the
  // group's count, and its events listed on hover (the canvas's title), not labels on each other.
  chartLabels = eventGroups(events, x);
  for (const group of chartLabels) {
    const [first] = group.events;
    g.fillStyle = group.events.length > 1 ? "#1b1f24" : EVENT_COLOURS[first.to] || "#5b6470";
    g.save();
    g.translate(group.x + 3, 14);
    g.rotate(Math.PI / 2);
    g.fillText(group.events.length > 1 ? `${group.events.length} events (hover)` : eventLabel(first), 0, 0);
    g.restore();
  }
  g.strokeStyle = "#0b63c5";
  g.lineWidth = 2;
  g.beginPath();
  state.readings.forEach((r, i) => (i ? g.lineTo(x(r.time), y(r.available_bytes)) : g.moveTo(x(r.time), y(r.available_bytes))));
  g.stroke();
  canvas.dataset.points = String(state.readings.length);
  canvas.dataset.events = String(events.length);
  canvas.dataset.labels = JSON.stringify(chartLabels.map((group) => [Math.round(group.x), group.events.length]));
}

const LABEL_GAP = 14; // px: a label is one line of 11-px text turned on its side
let chartLabels = [];

const eventLabel = (e) => `${e.model} ${e.to} (${e.reason})`;

function eventGroups(events, x) {
  const groups = [];
  for (const e of events) {
    const last = groups[groups.length - 1];
    if (last && x(e.time) - last.x < LABEL_GAP) last.events.push(e);
    else groups.push({ x: x(e.time), events: [e] });
  }
  return groups;
}

function showChartEvents(pointer) {
  const canvas = $("chart");
  const at = pointer.clientX - canvas.getBoundingClientRect().left;
  const group = chartLabels.find((g) => Math.abs(g.x - at) < LABEL_GAP / 2 + 2);
  canvas.title = group ? group.events.map(eventLabel).join("\n") : "";
}

// ---- models -----------------------------------------------------------------------------------

const SETTINGS = {
  language: { tasks: ["asr"], kind: "text", hint: "en, de… (empty: detect)" },
  prompt: { tasks: ["asr"], kind: "text", hint: "hotwords" },
  beam_size: { tasks: ["asr"], kind: "number", min: 1, max: 5 },
  condition_on_previous_text: { tasks: ["asr"], kind: "checkbox" },
  keep_alive: { kind: "text", hint: "5m, 300, 0, -1" },
  priority: { kind: "number" },
  pinned: { kind: "checkbox" },
};

function settingsForm(model) {
  const form = element("form", { class: "settings", testid: `settings-${model.id}` });
  for (const [name, spec] of Object.entries(SETTINGS)) {
    if (spec.tasks && !spec.tasks.includes(model.task)) continue;
    const type = spec.kind === "checkbox" ? "checkbox" : spec.kind;
    const input = element("input", { name, type, placeholder: spec.hint || "" });
    if (spec.min !== undefined) { input.min = String(spec.min); input.max = String(spec.max); }
    form.append(element("label", {}, name.replaceAll("_", " "), input));
  }
  const message = element("span", { class: "message" });
  form.append(element("button", { type: "submit" }, "Save"), message);
  fillSettings(form, model.settings);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const patch = {};
    for (const input of form.querySelectorAll("input")) {
      const spec = SETTINGS[input.name];
      if (spec.kind === "checkbox") patch[input.name] = input.checked;
      else if (input.value.trim() === "") patch[input.name] = null; // back to the default
      else patch[input.name] = spec.kind === "number" ? Number(input.value) : input.value.trim();
    }
    try {
      const saved = await (await api(`/api/models/${encodeURIComponent(model.id)}/settings`, {
        method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch),
      })).json();
      fillSettings(form, saved.settings);
      message.className = "message ok";
      message.textContent = "saved";
    } catch (err) {
      message.className = "message error";
      message.textContent = err.message;
    }
  });
  return form;
}

function fillSettings(form, settings) {
  for (const input of form.querySelectorAll("input")) {
    const value = settings[input.name];
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value === null || value === undefined ? "" : String(value);
  }
}

function modelRow(model) {
  const id = model.id;
  const cells = {
    state: element("td", { class: "state", testid: `model-state-${id}` }),
    runtime: element("td"), footprint: element("td"), inFlight: element("td"), loadedAt: element("td"),
    idle: element("td"), lastUnload: element("td"), failures: element("td"),
  };
  const load = element("button", { type: "button", testid: `load-${id}` }, "Load");
  const unload = element("button", { type: "button", testid: `unload-${id}` }, "Unload");
  const note = element("div", { class: "error" });
  const act = (button, path) => button.addEventListener("click", async () => {
    button.disabled = true;
    note.textContent = "";
    try { await api(path, { method: "POST" }); } catch (err) { note.textContent = err.message; }
    button.disabled = false;
    refreshModels();
  });
  act(load, `/api/models/${encodeURIComponent(id)}/load`);
  act(unload, `/api/models/${encodeURIComponent(id)}/unload?wait=30`);
  const row = element("tr", { testid: `model-row-${id}` },
    element("td", {}, element("b", {}, id), element("br"), model.task), cells.state, cells.runtime, cells.footprint,
    cells.inFlight, cells.loadedAt, cells.idle, cells.lastUnload, cells.failures,
    element("td", { class: "actions" }, load, " ", unload, note));
  const headers = [...document.querySelectorAll("#models thead th")].map((th) => th.textContent);
  [...row.children].forEach((cell, i) => { if (headers[i]) cell.dataset.label = headers[i]; }); // a phone's card
  const settings = element("tr", { class: "settings" }, element("td", { colspan: "10" }, settingsForm(model)));
  return { row, settings, cells };
}

function showModels(list) {
  const body = document.querySelector("#models tbody");
  for (const model of list) {
    if (!state.models.has(model.id)) {
      const view = modelRow(model);
      state.models.set(model.id, { view, model });
      body.append(view.row, view.settings);
    }
    const entry = state.models.get(model.id);
    entry.model = model;
    const c = entry.view.cells;
    c.state.textContent = model.state;
    c.state.className = `state state-${model.state}`;
    c.state.title = model.reason || "";
    const runtime = model.runtime || `${model.runtime_preferred || "–"} (preferred)`;
    c.runtime.textContent = `${runtime} ${(model.providers || []).join(", ")}`;
    c.runtime.title = model.runtime_reason || "";
    c.footprint.textContent = bytes(model.footprint_bytes);
    c.inFlight.textContent = String(model.in_flight);
    c.loadedAt.textContent = clock(model.loaded_at);
    c.lastUnload.textContent = model.last_unload_reason || "–";
    c.failures.textContent = `${model.failures} / ${model.thrashes}`;
  }
  fillModelChoices(list);
  tickCountdowns();
}

function tickCountdowns() {
  for (const { view, model } of state.models.values()) {
    view.cells.idle.textContent = model.state === "ready" ? countdown(model.expires_at) : "–";
  }
}

function fillModelChoices(list) {
  for (const [select, task] of [["try-asr", "asr"], ["try-llm", "llm"], ["try-tts", "tts"]]) {
    const ids = list.filter((m) => m.task === task).map((m) => m.id);
    const menu = $(select);
    if (menu.options.length !== ids.length) menu.replaceChildren(...ids.map((id) => element("option", { value: id }, id)));
  }
  $("speak-row").hidden = $("try-tts").options.length === 0;
}

let refreshing = null;
async function refreshModels() {
  if (refreshing) return refreshing;
  refreshing = getJson("/api/models").then((body) => showModels(body.models)).catch(() => {}).finally(() => { refreshing = null; });
  return refreshing;
}

$("free").addEventListener("click", async () => {
  $("free").disabled = true;
  $("free-result").textContent = "freeing…";
  try {
    const freed = await (await api("/api/system/free", { method: "POST" })).json();
    const which = freed.unloaded.length ? ` (${freed.unloaded.join(", ")})` : " (no idle model was loaded)";
    $("free-result").textContent = `${bytes(freed.reclaimed_bytes)} freed${which}`;
    $("free-result").dataset.reclaimed = String(freed.reclaimed_bytes);
  } catch (err) {
    $("free-result").textContent = err.message;
  }
  $("free").disabled = false;
  refreshModels();
});

// ---- events -----------------------------------------------------------------------------------

function addEvent(e) {
  if (state.events.length && e.time <= state.events[state.events.length - 1].time) return;
  state.events.push(e);
  if (state.events.length > 500) state.events.shift();
  const detail = e.from === e.to ? `${e.reason} ${e.language || ""} ${e.probability ? e.probability.toFixed(2) : ""}` :
    `${e.from} → ${e.to} (${e.reason})${e.reclaimed_bytes ? `, ${bytes(e.reclaimed_bytes)} back` : ""}`;
  const item = element("li", {}, `${clock(e.time)} ${e.model}: ${detail}`);
  $("events").prepend(item);
  while ($("events").children.length > 200) $("events").lastChild.remove();
}

// ---- live feed --------------------------------------------------------------------------------

// Followed from the last reading or event the page has, so a reconnect loses nothing; closed
// when the page goes (the service follows only a few pages at once), resumed if it comes back.
let following = false;
let leaving = new AbortController();
window.addEventListener("pagehide", () => leaving.abort());
window.addEventListener("pageshow", (e) => {
  if (!e.persisted) return;
  leaving = new AbortController();
  following = false;
  follow();
});

function lastSeen() {
  const times = [state.readings, state.events].filter((list) => list.length).map((list) => list[list.length - 1].time);
  return times.length ? Math.min(...times) : Date.now() / 1000;
}

async function follow() {
  if (following) return;
  following = true;
  const signal = leaving.signal;
  while (following && !signal.aborted) {
    try {
      const response = await api(`/api/stream?since=${lastSeen()}`, { signal });
      $("connection").textContent = "live";
      await readEvents(response, (message) => {
        if (message.type === "memory") addReading(message);
        else if (message.type === "event") { addEvent(message); refreshModels(); }
      });
    } catch (err) {
      if (err instanceof ApiError && err.message === "API key needed") { following = false; return; }
    }
    if (signal.aborted) return;
    $("connection").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function start() {
  try {
    const [health, memory, events] = await Promise.all(
      [getJson("/healthz"), getJson("/api/system/memory"), getJson("/api/events")]);
    $("unit").textContent = health.unit;
    document.title = `edge-asr · ${health.unit}`;
    const since = Date.now() / 1000 - CHART_SECONDS;
    state.readings = [];
    memory.history.filter((r) => r.time > since).forEach(addReading);
    addReading(memory.current);
    state.events = [];
    $("events").replaceChildren();
    events.events.forEach(addEvent);
    await refreshModels();
    follow();
  } catch (err) {
    if (!(err instanceof ApiError)) $("connection").textContent = `cannot reach the service (${err.message})`;
  }
}

// ---- try it -----------------------------------------------------------------------------------

function showError(message) { $("try-error").textContent = message; }

// One step of the chain at a time: its buttons are disabled until it has finished.
const CHAIN_BUTTONS = ["transcribe", "ask", "speak"];
async function chainStep(run) {
  CHAIN_BUTTONS.forEach((id) => { $(id).disabled = true; });
  showError("");
  try { await run(); } catch (err) { showError(err.message); }
  CHAIN_BUTTONS.forEach((id) => { $(id).disabled = false; });
}

// Browsers record WebM or Ogg; the service reads WAV at any rate, so the recording is decoded here
// and sent as 16-bit PCM WAV.
function wav(samples, rate) {
  const data = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((ch, i) => data.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); data.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); data.setUint32(16, 16, true); data.setUint16(20, 1, true); data.setUint16(22, 1, true);
  data.setUint32(24, rate, true); data.setUint32(28, rate * 2, true); data.setUint16(32, 2, true); data.setUint16(34, 16, true);
  text(36, "data"); data.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => data.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return new Blob([data], { type: "audio/wav" });
}

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("record").textContent = "Record";
      const context = new AudioContext();
      const audio = await context.decodeAudioData(await new Blob(chunks).arrayBuffer());
      state.recorded = wav(audio.getChannelData(0), audio.sampleRate);
      $("try-transcript").textContent = `recorded ${audio.duration.toFixed(1)} s: press Transcribe`;
    };
    recorder.start();
    $("record").textContent = "Stop";
  } catch (err) {
    showError(`cannot record: ${err.message}`);
  }
});

// ---- Live captions: the microphone over the Realtime API (/v1/realtime) ----------------------
// An AudioWorklet turns the microphone into 16-bit PCM at 24 kHz, sent 100 ms at a time; the
// server's VAD cuts turns. Each turn is a span: its words as they become stable, then its whole
// transcript. A browser's WebSocket cannot send headers: the key goes as a subprotocol.

const LIVE_RATE = 24000;
let live = null;

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function liveTurn(item) {
  let span = live.turns.get(item);
  if (!span) {
    span = element("span", { class: "partial" });
    $("live-transcript").append(span);
    live.turns.set(item, span);
  }
  return span;
}

function showLive(e) {
  if (e.type === "conversation.item.input_audio_transcription.delta") {
    liveTurn(e.item_id).textContent += e.delta;
  } else if (e.type === "conversation.item.input_audio_transcription.completed") {
    const span = liveTurn(e.item_id);
    span.textContent = `${e.transcript} `;
    span.className = "done";
  } else if (e.type === "error") {
    showError(e.error.message);
  }
}

function liveButtons(on) {
  $("live-start").hidden = on;
  $("live-stop").hidden = !on;
}

async function startLive() {
  const key = localStorage.getItem(KEY_STORE);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  live = { turns: new Map() }; // what is open so far: stopLive closes it, whatever fails next
  liveButtons(true);
  live.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  live.context = new AudioContext({ sampleRate: LIVE_RATE });
  await live.context.audioWorklet.addModule("/web/pcm-worklet.js");
  const { stream, context } = live;
  const node = new AudioWorkletNode(context, "pcm16");
  context.createMediaStreamSource(stream).connect(node); // before the session: a failure here opens none
  const socket = new WebSocket(
    `${scheme}://${location.host}/v1/realtime?intent=transcription`,
    key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"],
  );
  live.socket = socket;
  $("live-transcript").textContent = "";
  socket.onopen = () => {
    const input = {
      format: { type: "audio/pcm", rate: LIVE_RATE },
      transcription: { model: $("try-asr").value },
      turn_detection: { type: "server_vad" },
    };
    socket.send(JSON.stringify({ type: "session.update", session: { type: "transcription", audio: { input } } }));
    node.port.onmessage = (m) => {
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(m.data) }));
      }
    };
    node.connect(context.destination); // silent: the worklet writes no output, but is pulled
  };
  socket.onmessage = (m) => showLive(JSON.parse(m.data));
  socket.onclose = (e) => {
    if (!live || live.socket !== socket) return; // stopped here
    showError(`live captions ended by the service (${e.code})`);
    stopLive();
  };
}

function stopLive() {
  if (!live) return;
  const { stream, context, socket } = live;
  live = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (context) context.close();
  if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  liveButtons(false);
}

$("live-start").addEventListener("click", async () => {
  showError("");
  try { await startLive(); } catch (err) { stopLive(); showError(`cannot caption: ${err.message}`); }
});
$("live-stop").addEventListener("click", stopLive);

$("transcribe").addEventListener("click", () => chainStep(async () => {
  const file = $("try-file").files[0];
  const audio = file || state.recorded;
  if (!audio) throw new Error("choose an audio file or record first");
  const form = new FormData();
  form.append("file", audio, file ? file.name : "recording.wav");
  form.append("model", $("try-asr").value);
  $("try-transcript").textContent = "";
  if ($("try-speakers").checked) {  // who said what: a line a turn, which the LLM reads as it is
    form.append("response_format", "diarized_json");
    const reply = await (await api("/v1/audio/transcriptions", { method: "POST", body: form })).json();
    const turns = [];
    for (const s of reply.segments) {
      const last = turns[turns.length - 1];
      if (last && last.speaker === s.speaker) last.text += ` ${s.text.trim()}`;
      else turns.push({ speaker: s.speaker, text: s.text.trim() });
    }
    $("try-transcript").textContent = turns.map((t) => `${t.speaker}: ${t.text}`).join("\n");
    return;
  }
  form.append("stream", "true");
  const response = await api("/v1/audio/transcriptions", { method: "POST", body: form });
  await readEvents(response, (e) => {
    if (e.type === "transcript.text.delta") $("try-transcript").textContent += e.delta;
    else if (e.type === "transcript.text.done") $("try-transcript").textContent = e.text;
    else if (e.type === "error") showError(e.error.message);
  });
}));

$("ask").addEventListener("click", () => chainStep(async () => {
  const messages = [
    { role: "system", content: $("instruction").value },
    { role: "user", content: $("try-transcript").textContent || "(no transcript yet)" },
  ];
  $("try-output").textContent = "";
  const response = await api("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: $("try-llm").value, messages, stream: true, max_tokens: 256 }),
  });
  await readEvents(response, (chunk) => {
    if (chunk.error) showError(chunk.error.message);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
    if (delta) $("try-output").textContent += delta;
  });
}));

$("speak").addEventListener("click", () => chainStep(async () => {
  const input = $("try-output").textContent || $("try-transcript").textContent;
  if (!input.trim()) throw new Error("nothing to speak yet: transcribe or ask first");
  const response = await api("/v1/audio/speech", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: $("try-tts").value, input: input.slice(0, 4096), response_format: "wav" }),
  });
  const spoken = await response.blob();
  const player = $("try-audio");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(spoken);
  player.dataset.bytes = String(spoken.size);
}));

setInterval(() => { drawChart(); tickCountdowns(); }, 1000);
setInterval(refreshModels, 5000);
window.addEventListener("resize", drawChart);
$("chart").addEventListener("mousemove", showChartEvents);
start();
