// Tally's page: login, the organization's video library kept current over Socket.IO, and
// uploads. Plain script, no build step; the access token lives in memory only and is renewed
// through the HttpOnly refresh cookie.
"use strict";

const state = { token: null, user: null, socket: null, videos: new Map(), refreshTimer: null, playing: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401 && !options.retried) {
    const renewed = await refresh();
    if (renewed) return api(path, { ...options, retried: true });
    // The session is over (the account removed, or logged out elsewhere).
    if (renewed === false) signedOut();
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

// One refresh at a time: the timer, a 401 retry, a refused socket and the page's start all
// ask for one, and each use of the cookie rotates it. Within the tab they share one request;
// across tabs a Web Lock (where the page is a secure context) queues them, so each tab
// presents the cookie the previous one got. The server's grace window covers the rest.
let refreshing = null;

function refresh() {
  refreshing ??= queuedRefresh().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

function queuedRefresh() {
  if (!navigator.locks) return refreshNow();
  return navigator.locks.request("tally-refresh", refreshNow).catch(refreshNow);
}

/** True: renewed. False: the session is over (401). Null: the box could not be reached. */
async function refreshNow() {
  try {
    // Bounded, so a hung request cannot hold every tab's lock.
    const response = await fetch("/api/auth/refresh", {
      method: "POST",
      credentials: "same-origin",
      signal: AbortSignal.timeout(10000),
    });
    if (!response.ok) return response.status === 401 ? false : null;
    setSession(await response.json());
    return true;
  } catch {
    return null;
  }
}

function setSession(session) {
  state.token = session.accessToken;
  state.user = session.user;
  clearTimeout(state.refreshTimer);
  // Renewed well before it expires, so uploads and sockets always start with a valid token.
  renewIn(Math.max(5, Math.min(session.expiresIn - 60, session.expiresIn * 0.8)));
}

/** Refreshes in `seconds`; an unreachable box is tried again every 30 s. */
function renewIn(seconds) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(async () => {
    if ((await refresh()) === null) renewIn(30);
  }, seconds * 1000);
}

function show(view) {
  const signedIn = view !== "login" && view !== "setup";
  $("login-view").hidden = view !== "login";
  $("setup-view").hidden = view !== "setup";
  $("library-view").hidden = view !== "library";
  $("users-view").hidden = view !== "users";
  $("device-view").hidden = view !== "device";
  $("player-view").hidden = true;
  $("logout").hidden = !signedIn;
  $("nav").hidden = !signedIn;
  $("nav-users").hidden = !signedIn || state.user?.role !== "admin";
  $("nav-device").hidden = !signedIn || state.user?.role !== "admin";
  $("who").textContent = signedIn ? `${state.user.email} · ${state.user.orgName ?? ""}` : "";
}

/** The admin's view of the organization's users: add, change role, remove. */
async function loadUsers() {
  const response = await api("/api/users");
  if (!response.ok) {
    $("users-error").textContent = await errorMessage(response);
    return;
  }
  const { items } = await response.json();
  $("user-rows").replaceChildren(...items.map(userRow));
}

function userRow(user) {
  const row = document.createElement("tr");
  row.dataset.email = user.email;
  const email = document.createElement("td");
  email.textContent = user.email;
  const roleCell = document.createElement("td");
  const role = document.createElement("select");
  role.setAttribute("aria-label", `Role of ${user.email}`);
  for (const name of ["viewer", "editor", "admin"]) role.add(new Option(name, name, false, name === user.role));
  role.addEventListener("change", () => changeUser(user.id, "PATCH", { role: role.value }));
  roleCell.append(role);
  const actions = document.createElement("td");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove ${user.email}`);
  remove.disabled = user.id === state.user.id;
  remove.addEventListener("click", () => changeUser(user.id, "DELETE"));
  actions.append(remove);
  row.append(email, roleCell, actions);
  return row;
}

async function changeUser(id, method, body) {
  const options = { method };
  if (body) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  const response = await api(`/api/users/${encodeURIComponent(id)}`, options);
  $("users-error").textContent = response.ok ? "" : await errorMessage(response);
  await loadUsers();
}

/** The admin's view of the box: version, uptime, disk, temperature, decoder, LED. */
async function loadDevice() {
  const response = await api("/api/device");
  if (!response.ok) {
    $("device-error").textContent = await errorMessage(response);
    return;
  }
  $("device-error").textContent = "";
  renderDevice(await response.json());
}

function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function formatUptime(seconds) {
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  return days ? `${days} d ${hours} h` : hours ? `${hours} h ${minutes} min` : `${minutes} min`;
}

function renderDevice(device) {
  const led = device.led;
  const rows = [
    ["Version", `Tally ${device.version}`],
    ["Name", device.hostname || "unknown"],
    ["Service uptime", formatUptime(device.uptimeSeconds)],
    ["System uptime", device.systemUptimeSeconds == null ? "unknown" : formatUptime(device.systemUptimeSeconds)],
    ["Disk free", `${formatBytes(device.disk.freeBytes)} of ${formatBytes(device.disk.totalBytes)}`],
    ["CPU temperature", device.cpuTemperatureCelsius == null ? "no sensor" : `${device.cpuTemperatureCelsius.toFixed(1)} °C`],
    ["Decoding", `${device.decoder.mode}${device.decoder.hardwareAvailable ? ", hardware decoder present" : ", software only"}`],
    ["Processing now", `${device.jobsRunning} video${device.jobsRunning === 1 ? "" : "s"}`],
    ["Status LED", `${led.state}: ${led.pattern}${led.identifySecondsLeft ? ` (${led.identifySecondsLeft} s left)` : ""}`],
    ["LED hardware", led.backend],
  ];
  showDetails($("device-details"), rows);
  const ledRow = [...$("device-details").querySelectorAll("dt")].find((dt) => dt.textContent === "Status LED");
  ledRow.nextElementSibling.id = "led-state";
  $("led-state").dataset.state = led.state;
}

function setConnection(text) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = `connection ${text}`;
}

function connectSocket() {
  const socket = io({ auth: (cb) => cb({ token: state.token }) });
  state.socket = socket;
  socket.on("connect", () => {
    setConnection("connected");
    loadChat();
  });
  socket.on("chat:message", renderMessage);
  socket.on("device:status", (device) => {
    if (!$("device-view").hidden) renderDevice(device);
  });
  socket.on("disconnect", async (reason) => {
    setConnection("reconnecting");
    // The server ended it (the account was removed, or changed): a fresh token, or the login.
    if (reason === "io server disconnect") {
      const renewed = await refresh();
      if (renewed) socket.connect();
      else if (renewed === false) signedOut();
    }
  });
  socket.io.on("reconnect_failed", () => setConnection("offline"));
  socket.on("connect_error", async (error) => {
    setConnection("reconnecting");
    // A refused token is renewed once, then the connection is tried again; an account that
    // can no longer refresh is logged out.
    if (error.message !== "Invalid token") return;
    const renewed = await refresh();
    if (renewed) socket.connect();
    else if (renewed === false) signedOut();
  });
  socket.on("video:created", upsert);
  socket.on("video:updated", upsert);
  socket.on("video:processed", upsert);
  socket.on("video:deleted", ({ id }) => remove(id));
  socket.on("video:progress", ({ videoId, stage, progress }) => {
    const video = state.videos.get(videoId);
    // A processed video being made again stays processed (and playable) while it is.
    const status = video?.status === "processed" ? "processed" : "processing";
    if (video) upsert({ ...video, status, progress: { stage, percent: progress } });
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
  // A processed video being made again (its rendition rebuilt) shows its progress too.
  if (video.progress) {
    const stage = STAGE_LABELS[video.progress.stage] ?? video.progress.stage;
    const label = `${stage} ${video.progress.percent} %`;
    const line = document.createElement("p");
    line.className = "stage";
    line.textContent = label;
    body.append(line, progressBar(label, video.progress.percent));
  }
  if (video.playback?.problem) {
    const problem = document.createElement("p");
    problem.className = "problem";
    problem.textContent = `Plays as uploaded: ${video.playback.problem}`;
    body.append(problem);
  }
  if (video.error) {
    const error = document.createElement("p");
    error.className = "error";
    error.textContent = video.error;
    body.append(error);
  }
  parts.push(body);
  if (video.status === "processed") {
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.setAttribute("aria-label", `Play ${video.title}`);
    open.addEventListener("click", () => openPlayer(video.id));
    open.append(...parts);
    item.replaceChildren(open);
  } else {
    item.replaceChildren(...parts);
  }
  updateEmpty();
  if (state.playing === video.id) renderDetails(video);
}

/** What each processing stage is called on a card. */
const STAGE_LABELS = {
  metadata: "reading the file",
  sensitivity: "checking for flashes",
  thumbnail: "making the thumbnail",
  rendition: "preparing for playback",
};

/** What the player plays: the web rendition where there is one, else the original. */
function playbackUrl(video) {
  return video.playback?.url ?? video.streamUrl;
}

/** The player: a flagged video plays only after the viewer acknowledges the warning. */
function openPlayer(id) {
  const video = state.videos.get(id);
  if (!video) return;
  state.playing = id;
  const player = $("player-video");
  player.removeAttribute("src");
  player.load();
  $("player-title").textContent = video.title;
  const flagged = video.sensitivity?.verdict === "flagged";
  $("player-warning").hidden = !flagged;
  player.hidden = flagged;
  if (!flagged) player.src = playbackUrl(video);
  // A flagged video shows nothing of itself, previews included, before the acknowledgement.
  loadPreviews(flagged ? {} : video);
  const download = $("player-download");
  download.hidden = !video.originalUrl;
  if (video.originalUrl) download.href = video.originalUrl;
  renderDetails(video);
  $("library-view").hidden = true;
  $("users-view").hidden = true;
  $("player-view").hidden = false;
  (flagged ? $("player-acknowledge") : player).focus();
}

function renderDetails(video) {
  const m = video.metadata ?? {};
  const s = video.sensitivity ?? {};
  const rows = [
    ["Duration", m.durationMs ? formatDuration(m.durationMs) : "unknown"],
    ["Size", m.width ? `${m.width}×${m.height}` : "unknown"],
    ["Video", m.videoCodec ?? "unknown"],
    ["Audio", m.audio ? `${m.audio.codec}, ${m.audio.channels} ch, ${m.audio.sampleRate} Hz` : "none"],
    ["Decoder", m.decoder ?? "unknown"],
    ["Plays", describePlayback(video.playback)],
    ["Photosensitivity", s.verdict ? `${s.verdict}${s.warnings?.length ? ` (${s.warnings.join("; ")})` : ""}` : "not analysed"],
  ];
  showDetails($("player-details"), rows);
}

function describePlayback(playback) {
  if (!playback) return "the original";
  const kind = { original: "the original", remuxed: "a remuxed copy", transcoded: "a transcoded copy" }[playback.kind];
  const what = `${kind ?? playback.kind} (${playback.codec}): ${playback.reason}`;
  return playback.problem ? `${what}; ${playback.problem}` : what;
}

/** Fills a description list with [term, value] rows. */
function showDetails(list, rows) {
  list.replaceChildren(
    ...rows.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

/** Scrub previews of the open video: its cues, and the frame under the pointer on the seek bar. */
const scrub = { cues: [], sheet: null, dragging: false };

/** The cues of a WebVTT thumbnails track: start and end in seconds, the frame's rectangle. */
function parseCues(text) {
  const seconds = (t) => t.split(":").reduce((total, part) => total * 60 + Number(part), 0);
  const cues = [];
  for (const block of text.split(/\r?\n\r?\n+/)) {
    const lines = block.trim().split(/\r?\n/);
    const at = lines.findIndex((line) => line.includes("-->"));
    if (at < 0 || !lines[at + 1]) continue;
    const [start, end] = lines[at].split("-->").map((t) => seconds(t.trim()));
    const frame = /#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(lines[at + 1].trim());
    if (frame) cues.push({ start, end, x: +frame[1], y: +frame[2], w: +frame[3], h: +frame[4] });
  }
  return cues;
}

async function loadPreviews(video) {
  scrub.cues = [];
  scrub.sheet = null;
  $("player-scrub").hidden = true;
  $("player-preview").hidden = true;
  if (!video.previewsUrl) return;
  try {
    const response = await fetch(video.previewsUrl);
    if (!response.ok || state.playing !== video.id) return;
    const cues = parseCues(await response.text());
    // Another video may have been opened meanwhile.
    if (state.playing !== video.id) return;
    scrub.cues = cues;
    scrub.sheet = video.previewSheetUrl;
    $("player-scrub").hidden = scrub.cues.length === 0;
  } catch {
    // Previews are a nicety: the player works without them.
  }
}

/** Shows the frame at the pointer's place on the seek bar; returns that time in seconds. */
function showPreview(clientX) {
  const bar = $("player-seek");
  const player = $("player-video");
  const rect = bar.getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
  const duration = Number.isFinite(player.duration) ? player.duration : (scrub.cues.at(-1)?.end ?? 0);
  const at = fraction * duration;
  const cue = scrub.cues.find((c) => at >= c.start && at < c.end) ?? scrub.cues.at(-1);
  const preview = $("player-preview");
  if (!cue || !scrub.sheet) {
    preview.hidden = true;
    return at;
  }
  preview.style.width = `${cue.w}px`;
  preview.style.height = `${cue.h}px`;
  preview.style.backgroundImage = `url("${scrub.sheet}")`;
  preview.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
  preview.style.left = `${Math.min(rect.width - cue.w, Math.max(0, clientX - rect.left - cue.w / 2))}px`;
  $("player-preview-time").textContent = formatDuration(at * 1000);
  preview.hidden = false;
  return at;
}

function hidePreview() {
  if (!scrub.dragging) $("player-preview").hidden = true;
}

function closePlayer() {
  const id = state.playing;
  state.playing = null;
  scrub.dragging = false;
  $("player-preview").hidden = true;
  $("player-seek").value = "0";
  const player = $("player-video");
  player.pause();
  player.removeAttribute("src");
  player.load();
  show("library");
  // Keyboard users land back on the card they opened.
  document.querySelector(`[data-id="${CSS.escape(id ?? "")}"] .open`)?.focus();
}

function renderMessage(message) {
  const item = document.createElement("li");
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.author;
  const time = document.createElement("time");
  time.dateTime = new Date(message.createdAt).toISOString();
  time.textContent = new Date(message.createdAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const text = document.createElement("div");
  text.textContent = message.text;
  item.append(author, time, text);
  $("messages").append(item);
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function loadChat() {
  const answer = await state.socket.timeout(5000).emitWithAck("chat:history", {}).catch(() => null);
  if (!answer?.messages) return;
  $("messages").replaceChildren();
  answer.messages.forEach(renderMessage);
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

/** Back to the login page, the session gone. */
function signedOut() {
  state.socket?.disconnect();
  state.socket = null;
  state.token = null;
  clearTimeout(state.refreshTimer);
  setConnection("offline");
  show("login");
}

$("logout").addEventListener("click", async () => {
  await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin" });
  signedOut();
});

$("player-close").addEventListener("click", closePlayer);
$("nav-library").addEventListener("click", () => show("library"));
$("nav-users").addEventListener("click", async () => {
  show("users");
  await loadUsers();
});
$("nav-device").addEventListener("click", async () => {
  show("device");
  await loadDevice();
});
$("identify").addEventListener("click", async () => {
  const response = await api("/api/device/identify", { method: "POST" });
  if (!response.ok) {
    $("device-error").textContent = await errorMessage(response);
    return;
  }
  renderDevice(await response.json());
});
$("user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await api("/api/users", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: form.get("email"), password: form.get("password"), role: form.get("role") }),
  });
  if (!response.ok) {
    $("users-error").textContent = await errorMessage(response);
    return;
  }
  $("users-error").textContent = "";
  event.target.reset();
  await loadUsers();
});
// The seek bar under the player: mouse, pen and touch alike through pointer events.
$("player-seek").addEventListener("pointermove", (event) => showPreview(event.clientX));
$("player-seek").addEventListener("pointerdown", (event) => {
  scrub.dragging = true;
  try {
    event.target.setPointerCapture(event.pointerId);
  } catch {
    // A pointer the browser no longer knows: the drag works without capture.
  }
  showPreview(event.clientX);
});
for (const end of ["pointerup", "pointercancel"]) {
  $("player-seek").addEventListener(end, () => {
    scrub.dragging = false;
    hidePreview();
  });
}
$("player-seek").addEventListener("pointerleave", hidePreview);
$("player-seek").addEventListener("input", (event) => {
  const player = $("player-video");
  if (Number.isFinite(player.duration)) player.currentTime = (event.target.value / 1000) * player.duration;
});
$("player-video").addEventListener("timeupdate", (event) => {
  const player = event.target;
  if (!scrub.dragging && Number.isFinite(player.duration) && player.duration > 0) {
    $("player-seek").value = String(Math.round((player.currentTime / player.duration) * 1000));
  }
});
$("player-acknowledge").addEventListener("click", () => {
  const video = state.videos.get(state.playing);
  if (!video) return;
  $("player-warning").hidden = true;
  const player = $("player-video");
  player.hidden = false;
  player.src = playbackUrl(video);
  loadPreviews(video);
  player.focus();
});

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("chat-text");
  const text = input.value.trim();
  if (!text) return;
  input.disabled = true;
  try {
    const answer = await state.socket.timeout(5000).emitWithAck("chat:message", { text });
    if (answer.error) throw new Error(answer.error);
    renderMessage(answer.message);
    input.value = "";
    $("chat-error").textContent = "";
  } catch (error) {
    $("chat-error").textContent = `Not sent: ${error.message}`;
  } finally {
    input.disabled = false;
    input.focus();
  }
});

$("file-input").addEventListener("change", (event) => {
  [...event.target.files].forEach(upload);
  event.target.value = "";
});

// Files dropped anywhere on the library upload like picked ones; the server says what it
// refuses (not a video, too large, disk full) on each file's card.
const library = $("library-view");
library.addEventListener("dragover", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  library.classList.add("dragging");
});
library.addEventListener("dragleave", (event) => {
  if (!library.contains(event.relatedTarget)) library.classList.remove("dragging");
});
library.addEventListener("drop", (event) => {
  event.preventDefault();
  library.classList.remove("dragging");
  [...(event.dataTransfer?.files ?? [])].forEach(upload);
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("player-view").hidden) closePlayer();
});

$("setup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  const response = await fetch("/api/setup", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(form),
    credentials: "same-origin",
  });
  if (!response.ok) {
    $("setup-error").textContent = await errorMessage(response);
    return;
  }
  setSession(await response.json());
  await enter();
});

/** A new box asks for its setup code; otherwise the login page. */
async function start() {
  if (await refresh()) return enter();
  const setup = await fetch("/api/setup").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  show(setup.needed ? "setup" : "login");
}

start();
