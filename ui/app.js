// Tally's page: login, the organization's video library kept current over Socket.IO, and
// uploads. Plain script, no build step; the access token lives in memory only and is renewed
// through the HttpOnly refresh cookie.
"use strict";

const state = { token: null, user: null, socket: null, videos: new Map(), refreshTimer: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401 && !options.retried && (await refresh())) {
    return api(path, { ...options, retried: true });
  }
  return response;
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function refresh() {
  const response = await fetch("/api/auth/refresh", { method: "POST", credentials: "same-origin" });
  if (!response.ok) return false;
  setSession(await response.json());
  return true;
}

function setSession(session) {
  state.token = session.accessToken;
  state.user = session.user;
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, Math.max(10, session.expiresIn - 60) * 1000);
}

function show(view) {
  $("login-view").hidden = view !== "login";
  $("library-view").hidden = view !== "library";
  $("logout").hidden = view !== "library";
  $("who").textContent = view === "library" ? `${state.user.email} · ${state.user.orgName ?? ""}` : "";
}

function setConnection(text) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = `connection ${text}`;
}

function connectSocket() {
  const socket = io({ auth: (cb) => cb({ token: state.token }) });
  state.socket = socket;
  socket.on("connect", () => setConnection("connected"));
  socket.on("disconnect", () => setConnection("reconnecting"));
  socket.io.on("reconnect_failed", () => setConnection("offline"));
  socket.on("connect_error", async (error) => {
    setConnection("reconnecting");
    // A refused token is renewed once, then the connection is tried again.
    if (error.message === "Invalid token" && (await refresh())) socket.connect();
  });
  socket.on("video:created", upsert);
  socket.on("video:updated", upsert);
  socket.on("video:processed", upsert);
  socket.on("video:deleted", ({ id }) => remove(id));
  socket.on("video:progress", ({ videoId, stage, progress }) => {
    const video = state.videos.get(videoId);
    if (video) upsert({ ...video, status: "processing", progress: { stage, percent: progress } });
  });
  socket.on("video:failed", ({ videoId, stage, error }) => {
    const video = state.videos.get(videoId);
    if (video) upsert({ ...video, status: "failed", error: `${stage}: ${error}`, progress: undefined });
  });
}

async function loadLibrary() {
  const response = await api("/api/videos?limit=200");
  if (!response.ok) return;
  const page = await response.json();
  $("videos").replaceChildren();
  state.videos.clear();
  page.items.reverse().forEach(upsert);
  updateEmpty();
}

function updateEmpty() {
  $("empty").hidden = $("videos").children.length > 0;
}

function formatDuration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function card(id) {
  let item = document.querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = id;
    $("videos").prepend(item);
  }
  return item;
}

function upsert(video) {
  state.videos.set(video.id, video);
  const item = card(video.id);
  item.className = `card status-${video.status}`;
  const parts = [];
  const thumb = document.createElement(video.thumbnailUrl ? "img" : "div");
  thumb.className = "thumb";
  if (video.thumbnailUrl) {
    thumb.src = video.thumbnailUrl;
    thumb.alt = "";
  }
  parts.push(thumb);
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("h3");
  title.textContent = video.title;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = video.status;
  body.append(title, badge);
  const m = video.metadata;
  if (m) {
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = [m.durationMs ? formatDuration(m.durationMs) : null, `${m.width}×${m.height}`].filter(Boolean).join(" · ");
    body.append(meta);
  }
  if (video.sensitivity?.verdict === "flagged") {
    const warning = document.createElement("p");
    warning.className = "flagged";
    warning.textContent = "Photosensitivity warning: flashing";
    body.append(warning);
  }
  if (video.progress && (video.status === "processing" || video.status === "queued")) {
    body.append(progressBar(`${video.progress.stage} ${video.progress.percent}%`, video.progress.percent));
  }
  if (video.error) {
    const error = document.createElement("p");
    error.className = "error";
    error.textContent = video.error;
    body.append(error);
  }
  parts.push(body);
  item.replaceChildren(...parts);
  updateEmpty();
}

function progressBar(label, percent) {
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = percent;
  bar.setAttribute("aria-label", label);
  bar.title = label;
  return bar;
}

function remove(id) {
  state.videos.delete(id);
  document.querySelector(`[data-id="${CSS.escape(id)}"]`)?.remove();
  updateEmpty();
}

/** One upload with its own card: progress, speed, cancel, then processing takes over. */
function upload(file) {
  const id = `upload-${crypto.randomUUID()}`;
  const item = card(id);
  item.className = "card status-uploading";
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("h3");
  title.textContent = file.name;
  const status = document.createElement("p");
  status.className = "meta";
  const bar = progressBar(`upload ${file.name}`, 0);
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.textContent = "Cancel";
  body.append(title, bar, status, cancel);
  item.replaceChildren(body);
  updateEmpty();

  const form = new FormData();
  form.append("title", file.name.replace(/\.[^.]+$/, ""));
  form.append("file", file);
  const xhr = new XMLHttpRequest();
  const started = performance.now();
  xhr.open("POST", "/api/videos");
  xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    bar.value = Math.round((event.loaded / event.total) * 100);
    const seconds = (performance.now() - started) / 1000;
    status.textContent = `${bar.value}% · ${(event.loaded / 1048576 / Math.max(seconds, 0.001)).toFixed(1)} MB/s`;
  };
  xhr.onload = () => {
    item.remove();
    if (xhr.status === 201) {
      const video = JSON.parse(xhr.responseText);
      if (!state.videos.has(video.id) || state.videos.get(video.id).status === "queued") upsert(video);
      return;
    }
    let message = `${xhr.status}`;
    try {
      message = JSON.parse(xhr.responseText).error.message;
    } catch {}
    showUploadError(file.name, message);
  };
  xhr.onerror = () => {
    item.remove();
    showUploadError(file.name, "the upload failed (network)");
  };
  cancel.addEventListener("click", () => {
    xhr.abort();
    item.remove();
    updateEmpty();
  });
  xhr.send(form);
}

function showUploadError(name, message) {
  const item = card(`error-${crypto.randomUUID()}`);
  item.className = "card status-failed";
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("h3");
  title.textContent = name;
  const error = document.createElement("p");
  error.className = "error";
  error.textContent = message;
  body.append(title, error);
  item.replaceChildren(body);
}

async function enter() {
  show("library");
  connectSocket();
  await loadLibrary();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch("/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: form.get("email"), password: form.get("password") }),
    credentials: "same-origin",
  });
  if (!response.ok) {
    $("login-error").textContent = await errorMessage(response);
    return;
  }
  $("login-error").textContent = "";
  setSession(await response.json());
  await enter();
});

$("logout").addEventListener("click", async () => {
  await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin" });
  state.socket?.disconnect();
  state.token = null;
  clearTimeout(state.refreshTimer);
  setConnection("offline");
  show("login");
});

$("file-input").addEventListener("change", (event) => {
  [...event.target.files].forEach(upload);
  event.target.value = "";
});

(async () => {
  if (await refresh()) await enter();
  else show("login");
})();
