// gallop's web page: plain JavaScript over gallop's own API (/v1), no build step, no network
// beyond this server. The token lives in localStorage and goes in the Authorization header.
"use strict";

const TOKEN_KEY = "gallop.token";
const MAX_PROMPT = 2500;
const MAX_IMAGES = { "alibaba/hh1-i2v": 1, "alibaba/hh1.1-r2v": 9 };
const PAGE_SIZE = 10;

const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  models: [],
  model: null,
  // Each image: { uri, thumb (a URL to show), name, pending, fits (models it suits) }
  images: [],
  job: null,
  follow: null, // AbortController of the event stream being read
  clock: null,
  pages: [null], // cursors of the history pages seen; the last is the current page's
};

// ---------- API ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.errors && body.errors[0] ? body.errors[0].message : `HTTP ${response.status}`;
    if (response.status === 401 && path !== "/v1/models") signOut("Your token is no longer valid; sign in again.");
    throw new ApiError(response.status, message);
  }
  return body;
}

// ---------- sign in / out ----------

async function signIn(token) {
  state.token = token;
  const answer = await api("/v1/models");
  localStorage.setItem(TOKEN_KEY, token);
  state.models = answer.models;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = "signed in";
  renderModels();
  state.pages = [null];
  loadHistory();
}

function signOut(reason) {
  localStorage.removeItem(TOKEN_KEY);
  showSignIn(reason);
}

// The sign-in form, without forgetting a saved token (the server may only be unreachable).
function showSignIn(reason) {
  stopFollowing();
  state.token = null;
  state.images = [];
  renderThumbs();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("token").value = "";
  $("token-error").textContent = reason || "";
  $("token").focus();
}

// ---------- models ----------

function engineLabel(m) {
  if (!m.served) return `not served here: ${m.note || "no checkpoint configured"}`;
  if (m.engine === "preview") return "motion preview: camera moves over your images, not the neural model";
  const parts = [`${m.engine} engine`];
  if (m.checkpoint) parts.push(m.checkpoint);
  if (m.compute) parts.push(m.compute);
  return parts.join(", ");
}

function renderModels() {
  const box = $("models");
  box.textContent = "";
  for (const m of state.models) {
    const label = document.createElement("label");
    label.className = "model" + (m.served ? "" : " disabled");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "model";
    input.value = m.id;
    input.disabled = !m.served;
    input.addEventListener("change", () => selectModel(m.id));
    const text = document.createElement("span");
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = m.id;
    const engine = document.createElement("span");
    engine.className = "engine" + (m.engine === "preview" ? " preview" : "");
    engine.textContent = engineLabel(m);
    text.append(id, engine);
    label.append(input, text);
    box.append(label);
  }
  const first = state.models.find((m) => m.served);
  selectModel(state.model && state.models.some((m) => m.id === state.model && m.served) ? state.model : first && first.id);
}

function selectModel(id) {
  state.model = id || null;
  for (const input of document.querySelectorAll('input[name="model"]')) input.checked = input.value === id;
  const form = $("job-form");
  const r2v = id === "alibaba/hh1.1-r2v";
  form.classList.toggle("r2v", r2v);
  form.classList.toggle("i2v", !r2v);
  $("images-hint").textContent = r2v ? "1 to 9 reference images" : "1 image, animated";
  $("prompt-hint").textContent = r2v
    ? 'Required. Name the references as "image 1", "image 2" … in the order shown.'
    : "Optional: what should move, and how.";
  $("file").multiple = r2v;
  const max = MAX_IMAGES[id] || 1;
  if (state.images.length > max) state.images = state.images.slice(0, max);
  renderThumbs();
}

// ---------- images ----------

function maxImages() {
  return MAX_IMAGES[state.model] || 1;
}

function addFiles(files) {
  clearError("images");
  for (const file of files) {
    if (maxImages() === 1) state.images = [];
    if (state.images.length >= maxImages()) {
      showError("images", `at most ${maxImages()} images for ${state.model}`);
      break;
    }
    const item = { uri: null, thumb: URL.createObjectURL(file), name: file.name, pending: true, fits: null };
    state.images.push(item);
    upload(item, file);
  }
  renderThumbs();
}

async function upload(item, file) {
  try {
    const answer = await api("/v1/uploads", {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    item.uri = answer.uri;
    item.fits = answer.models;
    item.info = `${answer.width}×${answer.height}`;
  } catch (e) {
    state.images = state.images.filter((x) => x !== item);
    showError("images", `${item.name}: ${e.message}`);
  }
  item.pending = false;
  renderThumbs();
}

function addUrl() {
  const value = $("url").value.trim();
  clearError("images");
  if (!/^https?:\/\//i.test(value)) {
    showError("images", "an image URL must start with https:// or http://");
    return;
  }
  if (maxImages() === 1) state.images = [];
  if (state.images.length >= maxImages()) {
    showError("images", `at most ${maxImages()} images for ${state.model}`);
    return;
  }
  state.images.push({ uri: value, thumb: value, name: value, pending: false, fits: null, info: "URL" });
  $("url").value = "";
  renderThumbs();
}

function moveImage(from, to) {
  if (to < 0 || to >= state.images.length) return;
  const [item] = state.images.splice(from, 1);
  state.images.splice(to, 0, item);
  renderThumbs();
}

function renderThumbs() {
  const list = $("thumbs");
  list.textContent = "";
  state.images.forEach((item, i) => {
    const li = document.createElement("li");
    li.className = "thumb";
    li.draggable = true;
    li.dataset.index = String(i);
    const img = document.createElement("img");
    if (item.thumb) img.src = item.thumb;
    img.alt = `image ${i + 1}: ${item.name}`;
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = `image ${i + 1}`;
    const status = document.createElement("span");
    status.className = "status";
    if (item.pending) status.textContent = "uploading…";
    else if (item.fits && state.model && !item.fits.includes(state.model)) {
      status.textContent = `too small for ${state.model} (short side under 400 px)`;
      status.classList.add("bad");
    } else status.textContent = item.info || "";
    const tools = document.createElement("div");
    tools.className = "tools";
    const tool = (text, label, action, disabled) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.textContent = text;
      b.setAttribute("aria-label", label);
      b.disabled = disabled;
      b.addEventListener("click", action);
      tools.append(b);
    };
    tool("←", `move image ${i + 1} earlier`, () => moveImage(i, i - 1), i === 0);
    tool("→", `move image ${i + 1} later`, () => moveImage(i, i + 1), i === state.images.length - 1);
    tool("✕", `remove image ${i + 1}`, () => {
      state.images.splice(i, 1);
      renderThumbs();
    }, false);
    li.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/x-gallop-index", String(i));
      li.classList.add("dragging");
    });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (e) => {
      if (e.dataTransfer.types.includes("text/x-gallop-index")) e.preventDefault();
    });
    li.addEventListener("drop", (e) => {
      const from = e.dataTransfer.getData("text/x-gallop-index");
      if (from === "") return;
      e.preventDefault();
      e.stopPropagation();
      moveImage(Number(from), i);
    });
    li.append(img, num, status, tools);
    list.append(li);
  });
}

// ---------- field errors ----------

// The server names the field in its message (`Bad input: /input/prompt must ...`).
function fieldOf(message) {
  const m = /\/input\/([a-z_]+)/.exec(message || "");
  if (m) return m[1] === "image" ? "images" : m[1];
  if (/\/model\b/.test(message || "")) return "model";
  return "form";
}

function showError(field, message) {
  const el = document.querySelector(`.error[data-for="${field}"]`) || document.querySelector('.error[data-for="form"]');
  el.textContent = message;
  const box = $(`f-${field}`);
  if (box) box.classList.add("invalid");
}

function clearError(field) {
  const el = document.querySelector(`.error[data-for="${field}"]`);
  if (el) el.textContent = "";
  const box = $(`f-${field}`);
  if (box) box.classList.remove("invalid");
}

function clearErrors() {
  for (const el of document.querySelectorAll("#job-form .error")) el.textContent = "";
  for (const el of document.querySelectorAll("#job-form .invalid")) el.classList.remove("invalid");
}

function updateCount() {
  const n = [...$("prompt").value].length;
  const count = $("prompt-count");
  count.textContent = `${n} / ${MAX_PROMPT}`;
  count.classList.toggle("over", n > MAX_PROMPT);
}

// ---------- submit ----------

function formInput() {
  const r2v = state.model === "alibaba/hh1.1-r2v";
  const input = {};
  const uris = state.images.map((x) => x.uri);
  if (r2v) input.images = uris;
  else if (uris.length) input.image = uris[0];
  const prompt = $("prompt").value;
  if (r2v || prompt.trim()) input.prompt = prompt;
  const negative = $("negative_prompt").value;
  if (!r2v && negative.trim()) input.negative_prompt = negative;
  input.resolution = $("resolution").value;
  if (r2v) input.ratio = $("ratio").value;
  const duration = $("duration").value.trim();
  input.duration = duration === "" ? duration : Number(duration);
  if (!$("seed-random").checked) {
    const seed = $("seed").value.trim();
    input.seed = seed === "" ? seed : Number(seed);
  }
  input.watermark = $("watermark").checked;
  return input;
}

async function submitJob(event) {
  if (event) event.preventDefault();
  clearErrors();
  if (state.images.some((x) => x.pending)) {
    showError("images", "wait for the uploads to finish");
    return;
  }
  const button = $("submit");
  button.disabled = true;
  try {
    const job = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: state.model, input: formInput() }),
    });
    startFollowing(job);
    loadHistory();
  } catch (e) {
    const field = fieldOf(e.message);
    showError(field, e.message);
    const box = $(`f-${field}`);
    const focusable = box && box.querySelector("textarea, input:not([type=file]), select");
    if (focusable) focusable.focus();
  } finally {
    button.disabled = false;
  }
}

// ---------- progress ----------

function stopFollowing() {
  if (state.follow) state.follow.abort();
  state.follow = null;
  clearInterval(state.clock);
  state.clock = null;
}

function startFollowing(job) {
  stopFollowing();
  state.job = job;
  $("result").hidden = true;
  $("run").hidden = false;
  $("cancel").disabled = false;
  renderProgress(job);
  $("run").scrollIntoView({ block: "nearest" });
  state.clock = setInterval(() => state.job && renderElapsed(state.job), 500);
  const controller = new AbortController();
  state.follow = controller;
  readEvents(job.id, controller.signal);
}

// Reads the job's server-sent events with fetch (EventSource cannot send the token); resumes
// with Last-Event-ID if the stream drops before the job ends.
async function readEvents(id, signal) {
  let lastId = null;
  let ended = false;
  while (!ended && !signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`/v1/jobs/${id}/events`, { headers, signal });
      if (!response.ok) throw new ApiError(response.status, `events: HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = parseEvent(block);
          if (event.id) lastId = event.id;
          if (event.type === "job" && event.data) onJob(JSON.parse(event.data));
          if (event.type === "end") ended = true;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status < 500) return;
    }
    if (!ended && !signal.aborted) await new Promise((r) => setTimeout(r, 1000));
  }
}

function parseEvent(block) {
  const event = { type: "message", data: "", id: null };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (key === "event") event.type = value;
    else if (key === "data") event.data += (event.data ? "\n" : "") + value;
    else if (key === "id") event.id = value;
  }
  return event;
}

function onJob(job) {
  if (!state.job || job.id !== state.job.id) return;
  state.job = job;
  if (["completed", "failed", "cancelled"].includes(job.status)) {
    stopFollowing();
    $("run").hidden = true;
    showResult(job);
    $("result").scrollIntoView({ block: "nearest" });
    loadHistory();
  } else {
    renderProgress(job);
  }
}

function seconds(s) {
  if (s == null) return "–";
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function renderProgress(job) {
  const st = $("run-state");
  st.textContent = job.cancel_requested ? "cancelling…" : job.status;
  st.className = `state ${job.status}`;
  $("run-queue").textContent = job.queue_position == null ? "–" : String(job.queue_position);
  const { step, total } = job.progress || {};
  $("run-step").textContent = total ? `${step} / ${total}` : "–";
  const bar = $("run-progress");
  if (total) {
    bar.max = total;
    bar.value = step;
  } else if (job.status === "queued") {
    bar.max = 1;
    bar.value = 0;
  } else bar.removeAttribute("value");
  $("run-eta").textContent = job.eta_seconds == null ? "–" : seconds(job.eta_seconds);
  $("run-seed").textContent = job.seed == null ? "picked when it starts" : String(job.seed);
  renderElapsed(job);
}

function renderElapsed(job) {
  const t = job.timings || {};
  const end = t.finished_at_ms || Date.now();
  $("run-elapsed").textContent = t.created_at_ms ? seconds((end - t.created_at_ms) / 1000) : "–";
}

async function cancelJob() {
  if (!state.job) return;
  $("cancel").disabled = true;
  try {
    onJob(await api(`/v1/jobs/${state.job.id}/cancel`, { method: "POST" }));
  } catch (e) {
    $("run-state").textContent = e.message;
  }
}

// ---------- result ----------

function linkValid(url) {
  if (!url) return false;
  const exp = Number(new URL(url, location.href).searchParams.get("exp"));
  return !exp || exp * 1000 > Date.now();
}

function showResult(job) {
  state.job = job;
  $("result").hidden = false;
  const st = $("result-state");
  st.className = `state ${job.status}`;
  const video = $("result-video");
  const download = $("download");
  const url = job.result && job.result.video;
  if (job.status === "completed" && linkValid(url)) {
    st.textContent = `completed in ${seconds((job.timings.run_ms || 0) / 1000)}`;
    if (video.src !== url) video.src = url;
    video.hidden = false;
    download.href = url;
    download.setAttribute("download", `gallop-${job.id}.mp4`);
    download.hidden = false;
  } else {
    video.removeAttribute("src");
    video.load();
    video.hidden = true;
    download.hidden = true;
    st.textContent =
      job.status === "completed" ? "completed; its link has expired" : `${job.status}: ${job.error ? job.error.message : ""}`;
  }
  renderParams(job);
}

function renderParams(job) {
  if (job.seed != null) $("seed").placeholder = `last: ${job.seed}`;
  const dl = $("params");
  dl.textContent = "";
  const r = job.request || {};
  const engine = job.engine
    ? job.engine.engine === "preview"
      ? "motion preview (not the neural model)"
      : [job.engine.engine, job.engine.checkpoint].filter(Boolean).join(", ")
    : "–";
  const rows = [
    ["Job", job.id],
    ["Model", job.model],
    ["Engine", engine],
    ["Seed", job.seed == null ? "–" : String(job.seed)],
    ["Prompt", r.prompt || "–"],
  ];
  if (r.negative_prompt) rows.push(["Negative prompt", r.negative_prompt]);
  rows.push(["Resolution", r.resolution || "–"]);
  if (r.ratio) rows.push(["Ratio", r.ratio]);
  rows.push(["Duration", r.duration ? `${r.duration} s` : "–"]);
  rows.push(["Watermark", r.watermark === false ? "off" : "on"]);
  rows.push(["Images", (r.images || []).map((u, i) => `image ${i + 1}: ${u}`).join("\n") || "–"]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.style.whiteSpace = "pre-line";
    dl.append(dt, dd);
  }
}

// Fills the form with a job's request and its seed, then submits it.
async function runAgain() {
  const job = state.job;
  if (!job || !job.request) return;
  const r = job.request;
  selectModel(job.model);
  state.images = [];
  for (const uri of r.images || []) {
    if (!/^(https?:|gallop:)/.test(uri)) continue;
    state.images.push({ uri, thumb: "", name: uri, pending: false, fits: null, info: "" });
  }
  renderThumbs();
  loadThumbs();
  $("prompt").value = r.prompt || "";
  $("negative_prompt").value = r.negative_prompt || "";
  $("resolution").value = r.resolution || "720P";
  if (r.ratio) $("ratio").value = r.ratio;
  $("duration").value = r.duration || 5;
  $("seed-random").checked = job.seed == null;
  $("seed").disabled = job.seed == null;
  $("seed").value = job.seed == null ? "" : job.seed;
  $("watermark").checked = r.watermark !== false;
  updateCount();
  if ((r.images || []).length !== state.images.length) {
    showError("images", "an inline image of that job was deleted when it ended; add the images again");
    $("create").scrollIntoView();
    return;
  }
  await submitJob();
}

// Shows uploaded inputs (gallop://uploads/ID) through the authenticated upload route.
async function loadThumbs() {
  for (const item of state.images) {
    if (!item.thumb) item.thumb = await imageSrc(item.uri);
  }
  renderThumbs();
}

const blobCache = new Map();
async function imageSrc(uri) {
  const m = /^gallop:\/\/uploads\/(.+)$/.exec(uri);
  if (!m) return /^https?:/.test(uri) ? uri : "";
  if (blobCache.has(uri)) return blobCache.get(uri);
  try {
    const response = await fetch(`/v1/uploads/${encodeURIComponent(m[1])}`, {
      headers: { Authorization: `Bearer ${state.token}` },
    });
    const src = response.ok ? URL.createObjectURL(await response.blob()) : "";
    blobCache.set(uri, src);
    return src;
  } catch (_) {
    return "";
  }
}

// ---------- history ----------

async function loadHistory() {
  if (!state.token) return;
  const cursor = state.pages[state.pages.length - 1];
  let answer;
  try {
    answer = await api(`/v1/jobs?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  } catch (e) {
    $("history-empty").hidden = false;
    $("history-empty").textContent = `History could not be read: ${e.message}`;
    return;
  }
  const list = $("jobs");
  list.textContent = "";
  $("history-empty").hidden = answer.jobs.length > 0;
  $("history-empty").textContent = "No jobs yet.";
  for (const job of answer.jobs) list.append(historyItem(job));
  state.nextCursor = answer.next_cursor;
  $("older").disabled = !answer.next_cursor;
  $("newer").disabled = state.pages.length <= 1;
  $("page-label").textContent = `page ${state.pages.length}`;
}

function historyItem(job) {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.id = job.id;
  const r = job.request || {};
  const meta = document.createElement("div");
  meta.className = "meta";
  const st = document.createElement("span");
  st.className = `st ${job.status}`;
  st.textContent = job.status;
  const when = new Date(job.timings.created_at_ms).toLocaleString();
  const engine = job.engine && job.engine.engine === "preview" ? "preview engine" : job.engine ? job.engine.engine : "";
  const facts = [job.model, r.duration ? `${r.duration} s` : "", r.resolution || "", engine, when].filter(Boolean);
  meta.append(st);
  for (const f of facts) {
    const span = document.createElement("span");
    span.textContent = f;
    meta.append(span);
  }
  const open = document.createElement("button");
  open.type = "button";
  open.className = "secondary";
  open.textContent = "Open";
  open.setAttribute("aria-label", `open job ${job.id}`);
  open.addEventListener("click", () => openJob(job));
  meta.append(open);
  li.append(meta);
  if (r.prompt) {
    const p = document.createElement("p");
    p.className = "prompt";
    p.textContent = r.prompt.length > 200 ? `${r.prompt.slice(0, 200)}…` : r.prompt;
    li.append(p);
  }
  const inputs = document.createElement("div");
  inputs.className = "inputs";
  (r.images || []).forEach((uri, i) => {
    if (/^(https?:|gallop:)/.test(uri)) {
      const img = document.createElement("img");
      img.alt = `input image ${i + 1}`;
      imageSrc(uri).then((src) => {
        if (src) img.src = src;
        else img.replaceWith(gone(i));
      });
      inputs.append(img);
    } else inputs.append(gone(i));
  });
  li.append(inputs);
  const url = job.result && job.result.video;
  if (job.status === "completed" && linkValid(url)) {
    const video = document.createElement("video");
    video.controls = true;
    video.muted = true;
    video.preload = "metadata";
    video.playsInline = true;
    video.src = url;
    video.setAttribute("aria-label", `video of job ${job.id}`);
    li.append(video);
  } else if (job.error) {
    const p = document.createElement("p");
    p.className = "err";
    p.textContent = job.error.message;
    li.append(p);
  }
  return li;
}

function gone(i) {
  const span = document.createElement("span");
  span.className = "gone";
  span.textContent = `image ${i + 1} deleted`;
  return span;
}

function openJob(job) {
  if (["queued", "running"].includes(job.status)) startFollowing(job);
  else {
    stopFollowing();
    $("run").hidden = true;
    showResult(job);
  }
  $(job.status === "queued" || job.status === "running" ? "run" : "result").scrollIntoView({ behavior: "smooth" });
}

// ---------- wiring ----------

function wire() {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("token-error").textContent = "";
    try {
      await signIn($("token").value.trim());
    } catch (err) {
      state.token = null;
      $("token-error").textContent = err.status === 401 ? "That token is not valid." : err.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("job-form").addEventListener("submit", submitJob);
  $("file").addEventListener("change", (e) => {
    addFiles([...e.target.files]);
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    if (e.dataTransfer.types.includes("Files")) {
      e.preventDefault();
      drop.classList.add("over");
    }
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
  $("add-url").addEventListener("click", addUrl);
  $("url").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addUrl();
    }
  });
  $("prompt").addEventListener("input", () => {
    updateCount();
    clearError("prompt");
  });
  for (const id of ["negative_prompt", "duration", "seed", "resolution", "ratio"]) {
    $(id).addEventListener("input", () => clearError(id));
  }
  $("seed-random").addEventListener("change", (e) => {
    $("seed").disabled = e.target.checked;
    if (!e.target.checked) $("seed").focus();
  });
  $("cancel").addEventListener("click", cancelJob);
  $("again").addEventListener("click", runAgain);
  $("refresh").addEventListener("click", loadHistory);
  $("older").addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.pages.push(state.nextCursor);
    loadHistory();
  });
  $("newer").addEventListener("click", () => {
    if (state.pages.length > 1) state.pages.pop();
    loadHistory();
  });
}

async function start() {
  wire();
  updateCount();
  const saved = localStorage.getItem(TOKEN_KEY);
  if (!saved) {
    showSignIn();
    return;
  }
  try {
    await signIn(saved);
  } catch (e) {
    if (e.status === 401) signOut("The saved token is no longer valid; sign in again.");
    else showSignIn(`Could not reach gallop: ${e.message}`);
  }
}

start();
